"""Task geometry of a trained model on its data: how much its tasks share the trunk.

Four measures per shared Conv2d / Linear layer (`subspaces.layers_of` on the shared parameters;
a layer's gradient is that of its weight and bias together), one tidy frame (`task_geometry`):

- "cross_task_cos": for every unordered pair of tasks (t, u), the mean over the images i of a
  fixed retain sample (`fixed_retain_sample`) of cos(g_t,i, g_u,i), the gradients of the two
  tasks' losses on image i alone: how far a step for t on an image moves u on the same image.
  Per image, not of the batch: at a trained model the mean gradient over a batch is what is
  left of the training objective (small, and dominated by which images were drawn), so its
  cosines moved by up to 0.45 between retain samples of 32, 64 and 190 images of one model
  (benchmarks/DECISIONS.md);
- "batch_cross_task_cos": cos(g_t, g_u) of the gradients of the mean losses over that sample
  (`conflict.cosine_matrix`'s quantity);
- "forget_kept_cos": for every unordered pair of tasks (t, u), cos(g_t, g_u) of the gradients of
  their mean losses on the forget images: with t the target of a partial request and u kept
  (or the other way round), how far an ascent on t's forget loss moves u's loss on the same
  images (symmetric, so one row per pair);
- "output_saturation": rank(V) / C_out, V the union output basis that interference_aware's TGP
  builds for partial requests forgetting t (`subspaces.layer_subspaces` with the method's
  default thresholds, budget, samples and solver, `InterferenceAwareConfig`): at 1 the kept
  tasks' basis spans every output channel, and TGP takes out the whole part dW U U^T of every
  update of the layer that acts on its guarded inputs U.

The cosines also have a row for the layer "(all shared)": every shared parameter, BatchNorm
included. `conflict_label` turns the cross-task rows into a label. Gradients come from
`conflict.task_gradients` (torch.autograd.grad, model in eval mode; nothing is written to .grad).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from core.evaluation.conflict import cosine, layer_of, task_gradients
from core.evaluation.metrics import fixed_retain_sample
from core.requests import ForgetRequest
from core.tasks import TaskSpec
from core.unlearning.gradients import (
    DEFAULT_MEMORY_BUDGET_MB,
    Grads,
    flatten,
    per_sample_chunk,
    per_sample_grad_chunks,
)
from core.unlearning.interference_aware import InterferenceAwareConfig
from core.unlearning.subspaces import layer_subspaces, layers_of, shared_names

ALL_SHARED = "(all shared)"
COLUMNS = ["measure", "layer", "task", "other", "value", "rank", "channels"]
CONFLICT_THRESHOLD = 0.3
"""`conflict_label`'s default: below this peak |cross-task cosine|, a benchmark has low task
conflict (benchmarks/DECISIONS.md says why 0.3)."""


def layer_cosines(grads_a: Grads, grads_b: Grads, layers: Sequence[str]) -> dict[str, float]:
    """{layer: cos of the two gradients restricted to its parameters} for each of `layers`
    (parameters grouped by `conflict.layer_of`), then ALL_SHARED: every parameter of grads_a.

    grads_a, grads_b: {param name: tensor}, the same names. NaN where either part is zero.
    """
    out = {}
    for layer in layers:
        names = [n for n in grads_a if layer_of(n) == layer]
        out[layer] = cosine(flatten({n: grads_a[n] for n in names}),
                            flatten({n: grads_b[n] for n in names}))
    out[ALL_SHARED] = cosine(flatten(grads_a), flatten(grads_b))
    return out


def sample_cosines(model: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                   tasks: Mapping[str, TaskSpec], names: Sequence[str], layers: Sequence[str],
                   memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB
                   ) -> dict[tuple[str, str], dict[str, float]]:
    """{(t, u): {layer: mean over images of cos(g_t,i, g_u,i)}} for every unordered task pair,
    layers as in `layer_cosines` (ALL_SHARED last).

    batch: {"image": (B, 3, H, W), task: (B, ...)}; names: the parameters differentiated.
    Per-sample gradients (`per_sample_grad_chunks`, hooks where exact) come chunk by chunk, every
    task's of a chunk held at once within `memory_budget_mb`; an image where either gradient is
    zero in a layer is left out of that layer's mean (NaN when all are).
    """
    chunk, _ = per_sample_chunk(model, batch, names, memory_budget_mb, keep_result=False)
    streams = [per_sample_grad_chunks(model, batch, _one_task_loss(name, spec), names,
                                      max(1, chunk // len(tasks)), hooks=True)
               for name, spec in tasks.items()]
    groups = {layer: [n for n in names if layer_of(n) == layer] for layer in layers}
    groups[ALL_SHARED] = list(names)
    pairs = list(itertools.combinations(range(len(tasks)), 2))
    found = {(i, j, layer): [] for i, j in pairs for layer in groups}
    for parts in zip(*streams):
        for layer, members in groups.items():
            flat = [torch.cat([grads[n].flatten(1) for n in members], 1).double() for _, grads in parts]
            norms = [f.norm(dim=1) for f in flat]
            for i, j in pairs:
                valid = (norms[i] > 0) & (norms[j] > 0)
                cos = (flat[i] * flat[j]).sum(1)[valid] / (norms[i] * norms[j])[valid]
                found[i, j, layer].append(cos.clamp(-1, 1))
    order = list(tasks)
    return {(order[i], order[j]): {layer: _mean(found[i, j, layer]) for layer in groups}
            for i, j in pairs}


def _mean(parts: list[torch.Tensor]) -> float:
    values = torch.cat(parts)
    return values.mean().item() if len(values) else math.nan


def _one_task_loss(name: str, spec: TaskSpec):
    def loss(outputs, sample):
        return spec.per_sample_loss(outputs[name], sample[name]).sum()
    return loss


def _rows(measure: str, task: str, other: str, cosines: Mapping[str, float]) -> list[dict]:
    return [{"measure": measure, "layer": layer, "task": task, "other": other, "value": value,
             "rank": math.nan, "channels": math.nan} for layer, value in cosines.items()]


def task_geometry(model: torch.nn.Module, data, instances: Sequence[int], retain_sample: int = 64,
                  seed: int = 0, config: InterferenceAwareConfig | None = None,
                  saturation: bool = True, targets: Sequence[str] | None = None) -> pd.DataFrame:
    """The three measures of the module docstring, for `model` on `data`.

    Args:
        model: a multi-task model (`model.shared_parameters()`, outputs {task: tensor}).
        data: anything with `.train` (a dataset with `.tasks`, `.ids`, `.batch(ids)`), e.g.
            `UnlearningData`.
        instances: the forget images (training ids) of the partial-mode measures.
        retain_sample: retain ids of the cross-task cosines (`fixed_retain_sample`, `seed`).
        config: interference_aware's configuration for the saturation (default: its defaults).
        saturation: False leaves out the "output_saturation" rows (they cost a basis per task).
        targets: the tasks whose partial requests get saturation rows (default: every task).
    Returns:
        Rows measure, layer, task, other, value, rank, channels: cosines in value (rank and
        channels NaN); saturation rows with other "" and value = rank / channels. Layers in
        model order, ALL_SHARED last. A model with one task has no cosine rows.
    """
    tasks: dict[str, TaskSpec] = dict(data.train.tasks)
    names = shared_names(model)
    layers = layers_of(model, names)
    device = next(model.parameters()).device
    request = ForgetRequest.build(instances, None, list(data.train.ids), list(tasks))
    config = config or InterferenceAwareConfig()

    def batch(ids):
        return {k: v.to(device) for k, v in data.train.batch(list(ids)).items()
                if isinstance(v, torch.Tensor)}

    rows: list[dict] = []
    was_training = model.training
    model.eval()
    try:
        retain_batch = batch(fixed_retain_sample(request, retain_sample, seed))
        with torch.enable_grad():
            retain = task_gradients(model, retain_batch, tasks, names)
            forget = task_gradients(model, batch(request.instances), tasks, names)
        per_image = sample_cosines(model, retain_batch, tasks, names, list(layers))
        for t, u in itertools.combinations(tasks, 2):
            rows += _rows("cross_task_cos", t, u, per_image[t, u])
            rows += _rows("batch_cross_task_cos", t, u, layer_cosines(retain[t], retain[u], list(layers)))
            rows += _rows("forget_kept_cos", t, u, layer_cosines(forget[t], forget[u], list(layers)))
        if saturation and len(tasks) > 1:
            rows += _saturation_rows(model, layers, tasks, request, batch, config, targets)
    finally:
        model.train(was_training)
    return pd.DataFrame(rows, columns=COLUMNS)


def _saturation_rows(model, layers, tasks, request, batch, config, targets=None) -> list[dict]:
    """rank(V) / C_out per layer, for each partial request forgetting one task t: V from a retain
    sample (every task; the kept tasks only with `output_basis="kept"`) and the forget images
    (the kept tasks), as `InterferenceAware.kept_subspaces` builds it."""
    budget = config.basis_budget * sum(p.numel() for p in model.parameters())
    retain = batch(fixed_retain_sample(request, config.subspace_batch, config.seed))
    forget = batch(request.instances[:config.forget_batch])
    rows = []
    for target in tasks if targets is None else [t for t in tasks if t in targets]:
        kept = {name: spec for name, spec in tasks.items() if name != target}
        signals = kept if config.output_basis == "kept" else tasks
        groups = {"retain": (retain, signals), "kept": (forget, kept)}
        subspaces = layer_subspaces(model, layers, groups, config.eps_in, config.eps_out, budget,
                                    config.max_rows, torch.Generator().manual_seed(config.seed),
                                    config.memory_budget_mb, {"retain": config.signal_batch},
                                    config.solver)
        for layer, subspace in subspaces.items():
            rank, channels = subspace.outputs.shape[1], subspace.outputs.shape[0]
            rows.append({"measure": "output_saturation", "layer": layer, "task": target,
                         "other": "", "value": rank / channels, "rank": rank, "channels": channels})
    return rows


def peak_cross_task_cos(frame: pd.DataFrame) -> float:
    """The peak |cross-task cos|: max over shared Conv2d / Linear layers and task pairs of
    |mean over the retain images of the per-image cosine| ("cross_task_cos" rows of
    `task_geometry`, ALL_SHARED left out); NaN when there are none."""
    rows = frame[(frame["measure"] == "cross_task_cos") & (frame["layer"] != ALL_SHARED)]
    values = rows["value"].abs().dropna()
    return float(values.max()) if len(values) else math.nan


def conflict_label(frame: pd.DataFrame, threshold: float = CONFLICT_THRESHOLD) -> str:
    """"low task conflict" when `peak_cross_task_cos(frame)` < threshold, "task conflict" at or
    above it, "unknown" without cross-task rows (a single-task model)."""
    peak = peak_cross_task_cos(frame)
    if not math.isfinite(peak):
        return "unknown"
    return "low task conflict" if peak < threshold else "task conflict"


def geometry_summary(frame: pd.DataFrame, threshold: float = CONFLICT_THRESHOLD) -> dict[str, object]:
    """One line of a `task_geometry` frame: the peak |cross-task cos| and its label, the peak
    |forget-vs-kept cos| (shared Conv2d / Linear layers), the mean output saturation over layers
    and target tasks and the count of (layer, target) pairs where V spans every channel."""
    layered = frame[frame["layer"] != ALL_SHARED]
    forget = layered[layered["measure"] == "forget_kept_cos"]["value"].abs().dropna()
    saturation = layered[layered["measure"] == "output_saturation"]
    return {"peak_cross_task_cos": peak_cross_task_cos(frame),
            "peak_forget_kept_cos": float(forget.max()) if len(forget) else math.nan,
            "mean_saturation": float(saturation["value"].mean()) if len(saturation) else math.nan,
            "saturated_layers": int((saturation["value"] >= 1).sum()),
            "saturation_pairs": len(saturation),
            "label": conflict_label(frame, threshold)}


def benchmark_labels(frame: pd.DataFrame, threshold: float = CONFLICT_THRESHOLD) -> pd.DataFrame:
    """`geometry_summary` per benchmark of a frame with a "benchmark" column (`Bench.geometry`):
    one row each, in the frame's order."""
    return pd.DataFrame([{"benchmark": benchmark, **geometry_summary(group, threshold)}
                         for benchmark, group in frame.groupby("benchmark", sort=False)])


def method_outlook(frame: pd.DataFrame, config: InterferenceAwareConfig, mode: str,
                   targets: Sequence[str] = ()) -> list[str]:
    """Plain sentences, before a run, on whether task-aware projection has room on this model and
    request and which parts of interference_aware (as `config` sets them) will act, read from a
    `task_geometry` frame: the conflict label, TGP's room per shared layer (output saturation at
    or below `config.saturation` and below 1, for the target tasks of a partial request), IGO and
    what it orthogonalises against, and where the run stops."""
    layered = frame[frame["layer"] != ALL_SHARED]
    lines = []
    peak = peak_cross_task_cos(frame)
    if math.isfinite(peak):
        conflict = conflict_label(frame) == "task conflict"
        lines.append(f"{'Task conflict' if conflict else 'Low task conflict'}: two tasks' gradients on the "
                     f"same image reach |cos| {peak:.2f} in the shared layers (threshold "
                     f"{CONFLICT_THRESHOLD}), so "
                     + ("task-aware projection has cross-task interference to avoid."
                        if conflict else "there is little cross-task interference for task-aware "
                                         "projection to avoid."))
    else:
        lines.append("Task conflict not measured (a single-task model, or no measure yet).")
    partial = mode == "partial"
    if config.tgp not in ("always", mode):
        lines.append(f"TGP does not run in {mode}-task requests (tgp={config.tgp}).")
    elif not partial and config.output_basis == "kept":
        lines.append("TGP: a full-task request has no kept task, so every shared layer gets GPM's "
                     "input-side projection on the retain data.")
    else:
        saturation = layered[layered["measure"] == "output_saturation"]
        if partial and len(targets):
            saturation = saturation[saturation["task"].isin(list(targets))]
        per_layer = saturation.groupby("layer", sort=False)["value"].max()
        if per_layer.empty:
            lines.append("TGP runs; its room per layer is not measured.")
        else:
            room = per_layer[(per_layer <= config.saturation) & (per_layer < 1)]
            lines.append(f"TGP: the output basis leaves room in {len(room)} of {len(per_layer)} shared "
                         "layers "
                         f"(it spans {100 * per_layer.min():.0f}-{100 * per_layer.max():.0f}% of their "
                         f"channels); it is GPM's input-side projection in {len(per_layer) - len(room)}.")
    if config.igo in ("always", mode):
        line = ("IGO runs: the forget direction loses its component along this step's retain samples' "
                "gradients")
        if partial and config.igo_kept:
            line += " and the kept tasks' gradients on the forget images"
            kept = layered[(layered["measure"] == "forget_kept_cos")
                           & (layered["task"].isin(list(targets)) | layered["other"].isin(list(targets)))]
            values = kept["value"].abs().dropna()
            if len(values):
                line += f" (forgetting moves a kept task on the same images: |cos| up to {values.max():.2f})"
        lines.append(line + ".")
    else:
        lines.append(f"IGO does not run in {mode}-task requests (igo={config.igo}).")
    if config.target == "fixed":
        lines.append(f"It ascends every forget loss for all {config.steps} steps (no target).")
    else:
        where = "primary metric" if config.stop == "metric" else "loss"
        lines.append(f"It stops when the forget images' {where} reaches that of unseen calibration images, "
                     f"or after {config.steps} steps.")
    return lines
