"""The Per class view: IoU per class on forget / retain / test for before, after and the oracle,
and the change of the prediction matrix on a chosen split, for each segmentation-like task
(`core.evaluation.per_class`; computed once per run, or per pair for a contrast of runs A and B)."""

from __future__ import annotations

import streamlit as st

from app.charts import class_change_table, class_iou_figure, confusion_change_figure
from app.state import Run
from app.views import Shown, as_shown
from core.evaluation.per_class import class_confusions, confusion_change, per_class_table


def per_class_view(subject: Run | Shown) -> None:
    shown = as_shown(subject)
    if "per_class" not in shown.cache:
        data = shown.data()
        with st.spinner("Counting each class's pixels on the forget, retain and test images..."):
            confusions = class_confusions(shown.models, shown.request, data)
        names = {name: task.class_names for name, task in data.train.tasks.items()}
        shown.cache["per_class"] = (confusions, per_class_table(confusions, names))
    confusions, table = shown.cache["per_class"]
    if table.empty:
        st.info("This model has no segmentation-like task (one whose metric counts classes), so there "
                "is no per-class view.")
        return
    tasks = list(dict.fromkeys(table["task"]))
    task = st.selectbox("Task", tasks, key="per_class_task") if len(tasks) > 1 else tasks[0]
    st.plotly_chart(class_iou_figure(table, task, shown.titles, shown.colours), width="stretch",
                    key="class_iou")
    splits = list(dict.fromkeys(table[table["task"] == task]["split"]))
    columns = st.columns(3 if len(shown.focus) > 1 else 2)
    split = columns[0].selectbox("Prediction matrix on", splits, key="per_class_split")
    after = columns[1].selectbox("Change of", [m for m in shown.models if m != "original"],
                                 key="per_class_model",
                                 format_func=shown.titles.__getitem__) or shown.focus[0]
    before = "original"
    if len(shown.focus) > 1:  # a contrast: B against A as well as against the original
        before = columns[2].selectbox("against", [m for m in shown.models if m != after],
                                      key="per_class_against", format_func=shown.titles.__getitem__) or before
    classes = list(dict.fromkeys(table[(table["task"] == task) & (table["model"] == "original")
                                       & (table["split"] == split)]["class"]))
    change = confusion_change(confusions, split, task, after, before)
    against = "before" if before == "original" else shown.titles[before]
    st.plotly_chart(confusion_change_figure(change, classes, f"{task} on {split}",
                                            f"{shown.titles[after]} minus {against}",
                                            "share of each true class's pixels predicted as each class"),
                    width="content", key="confusion_change")
    st.caption("Each row is a true class and sums to 0: red where the model now predicts that class more "
               "often, blue where less. On the forget images a useful change moves them toward how "
               "the oracle treats them, while retain and test should barely change.")
    st.dataframe(class_change_table(table, task, shown.focus).style.format(precision=3), hide_index=True,
                 width="stretch")
