import math

import pandas as pd
import pytest
import torch

from core.evaluation.geometry import (
    ALL_SHARED,
    COLUMNS,
    benchmark_labels,
    conflict_label,
    geometry_summary,
    layer_cosines,
    peak_cross_task_cos,
    sample_cosines,
    task_geometry,
)


def test_layer_cosines_on_hand_made_gradients():
    a = {"l1.weight": torch.tensor([1.0, 0.0]), "l1.bias": torch.tensor([0.0]),
         "l2.weight": torch.tensor([1.0])}
    b = {"l1.weight": torch.tensor([0.0, 1.0]), "l1.bias": torch.tensor([0.0]),
         "l2.weight": torch.tensor([-1.0])}
    cosines = layer_cosines(a, b, ["l1", "l2"])
    assert list(cosines) == ["l1", "l2", ALL_SHARED]
    assert cosines["l1"] == pytest.approx(0.0) and cosines["l2"] == pytest.approx(-1.0)
    assert cosines[ALL_SHARED] == pytest.approx(-0.5)  # [1,0,0,1] . [0,1,0,-1] / 2


def frame(rows):
    return pd.DataFrame([{"measure": m, "layer": layer, "task": "a", "other": "b", "value": v,
                          "rank": math.nan, "channels": math.nan} for m, layer, v in rows], columns=COLUMNS)


def test_conflict_label_reads_the_peak_absolute_layer_cosine():
    quiet = frame([("cross_task_cos", "l1", 0.1), ("cross_task_cos", "l2", -0.15),
                   ("cross_task_cos", ALL_SHARED, 0.9),  # the whole trunk is not a layer
                   ("forget_kept_cos", "l1", 0.95)])  # nor is the forget-vs-kept measure
    assert peak_cross_task_cos(quiet) == pytest.approx(0.15)
    assert conflict_label(quiet) == "low task conflict"
    assert conflict_label(quiet, threshold=0.1) == "task conflict"
    opposed = frame([("cross_task_cos", "l1", 0.1), ("cross_task_cos", "l2", -0.5)])
    assert conflict_label(opposed) == "task conflict"  # opposite directions count as much
    assert conflict_label(frame([("forget_kept_cos", "l1", 0.5)])) == "unknown"


def test_geometry_of_the_tiny_indoor_model(tiny_model, indoor_data):
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    tiny_model.train()
    geometry = task_geometry(tiny_model, indoor_data, indoor_data.train.ids[:3], retain_sample=8)
    assert tiny_model.training and all(p.grad is None for p in tiny_model.parameters())
    assert all(torch.equal(p, before[n]) for n, p in tiny_model.named_parameters())
    assert list(geometry.columns) == COLUMNS
    tasks, layers = list(indoor_data.train.tasks), 5  # small_cnn: five shared convolutions
    counts = geometry.groupby("measure").size()
    assert counts["cross_task_cos"] == 3 * (layers + 1)  # task pairs x (layers + all shared)
    assert counts["batch_cross_task_cos"] == counts["forget_kept_cos"] == 3 * (layers + 1)
    assert counts["output_saturation"] == len(tasks) * layers  # one partial request per task
    cosines = geometry[geometry["measure"] != "output_saturation"]["value"]
    assert cosines.between(-1, 1).all()
    saturation = geometry[geometry["measure"] == "output_saturation"]
    assert (saturation["value"] == saturation["rank"] / saturation["channels"]).all()
    assert saturation["value"].between(0, 1).all()
    summary = geometry_summary(geometry)
    assert summary["label"] in ("low task conflict", "task conflict")
    assert summary["saturation_pairs"] == len(tasks) * layers
    without = task_geometry(tiny_model, indoor_data, indoor_data.train.ids[:3], retain_sample=8,
                            saturation=False)
    assert "output_saturation" not in set(without["measure"])


def test_sample_cosines_match_per_image_gradients_in_any_chunking(tiny_model, indoor_data):
    from core.unlearning.gradients import per_sample_grads
    from core.unlearning.subspaces import layers_of, shared_names

    tiny_model.eval()
    tasks = dict(indoor_data.train.tasks)
    batch = {k: v for k, v in indoor_data.train.batch(indoor_data.train.ids[:5]).items()
             if isinstance(v, torch.Tensor)}
    names = shared_names(tiny_model)
    layers = list(layers_of(tiny_model, names))
    whole = sample_cosines(tiny_model, batch, tasks, names, layers)
    chunked = sample_cosines(tiny_model, batch, tasks, names, layers, memory_budget_mb=1e-6)
    (t, u), first = ("segmentation", "depth"), layers[0]
    grads = {task: per_sample_grads(tiny_model, batch, lambda out, s, task=task: tasks[task].per_sample_loss(
        out[task], s[task]).sum(), names) for task in (t, u)}
    members = [n for n in names if n.startswith(first + ".")]
    a, b = (torch.cat([grads[task][n].flatten(1) for n in members], 1) for task in (t, u))
    expected = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1).mean().item()
    assert whole[t, u][first] == pytest.approx(expected, abs=1e-5)
    assert chunked[t, u][first] == pytest.approx(expected, abs=1e-5)
    assert list(whole) == [("segmentation", "depth"), ("segmentation", "normal"), ("depth", "normal")]
    assert list(whole[t, u]) == [*layers, ALL_SHARED]


def test_benchmark_labels_and_the_report_section():
    from core.evaluation.benchmark import QUICK
    from core.evaluation.report import markdown_report

    geometry = pd.concat([frame([("cross_task_cos", "l1", 0.1)]).assign(benchmark="quiet"),
                          frame([("cross_task_cos", "l1", -0.6)]).assign(benchmark="torn")])
    labels = benchmark_labels(geometry).set_index("benchmark")
    assert list(labels.index) == ["quiet", "torn"]
    assert list(labels["label"]) == ["low task conflict", "task conflict"]
    assert labels.loc["torn", "peak_cross_task_cos"] == pytest.approx(0.6)
    frames = {"headline": pd.DataFrame(), "summary": pd.DataFrame(columns=["benchmark", "mode"]),
              "details": pd.DataFrame(columns=["benchmark", "ratio", "setting"]), "geometry": geometry}
    summary = markdown_report(frames, QUICK)
    assert "## Task geometry of the base models" in summary
    assert "| torn | 0.600 |" in summary and "task conflict |" in summary
