import math

import pandas as pd

from app.charts import geometry_table
from core.evaluation.geometry import COLUMNS


def test_geometry_table_one_row_per_layer():
    rows = [("cross_task_cos", "l1", "a", "b", 0.5), ("cross_task_cos", "l2", "a", "b", -0.1),
            ("output_saturation", "l1", "a", "", 1.0), ("output_saturation", "l2", "a", "", 0.25)]
    frame = pd.DataFrame([{"measure": m, "layer": layer, "task": t, "other": o, "value": v,
                           "rank": math.nan, "channels": math.nan} for m, layer, t, o, v in rows],
                         columns=COLUMNS)
    table = geometry_table(frame)
    assert list(table["layer"]) == ["l1", "l2"]
    assert list(table.columns) == ["layer", "cross_task_cos a/b", "output_saturation forgetting a"]
    assert table["output_saturation forgetting a"].tolist() == [1.0, 0.25]
