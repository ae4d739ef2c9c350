"""Gradient-conflict analysis on shared parameters (docs/ARCHITECTURE.md section 12.5): cosines and angles
between per-task forget and retain gradients, overall and per layer, and the retain instances
most aligned with or opposed to an unlearning update."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import pandas as pd
import torch

from core.tasks import TaskSpec
from core.unlearning.gradients import Grads, flatten, gradients, per_sample_grads

_COLUMNS = ["forget_task", "retain_task", "cosine", "angle_deg", "conflict"]


def _vector(grad: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
    return flatten(grad) if isinstance(grad, Mapping) else grad.reshape(-1)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of two (P,) vectors in float64; NaN when either is zero."""
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    norms = a.norm() * b.norm()
    return (a @ b / norms).clamp(-1, 1).item() if norms > 0 else math.nan


def _row(forget_task: str, retain_task: str, a: torch.Tensor, b: torch.Tensor) -> dict:
    c = cosine(a, b)
    return {"forget_task": forget_task, "retain_task": retain_task, "cosine": c,
            "angle_deg": math.degrees(math.acos(c)) if math.isfinite(c) else math.nan,
            "conflict": bool(c < 0)}


def cosine_matrix(forget_grads: Mapping[str, torch.Tensor | Grads],
                  retain_grads: Mapping[str, torch.Tensor | Grads]) -> pd.DataFrame:
    """Every (forget task, retain task) pair: cosine, angle in degrees, conflict = cosine < 0.

    forget_grads, retain_grads: {task: (P,) tensor} or {task: {param name: tensor}} (flattened
    in order). A zero gradient gives NaN cosine and angle and no conflict.
    """
    rows = [_row(f, r, _vector(gf), _vector(gr))
            for f, gf in forget_grads.items() for r, gr in retain_grads.items()]
    return pd.DataFrame(rows, columns=_COLUMNS)


def layer_of(name: str) -> str:
    """The module a parameter belongs to: "backbone.0.weight" -> "backbone.0"."""
    return name.rsplit(".", 1)[0]


def cosine_matrix_by_layer(forget_grads: Mapping[str, Grads],
                           retain_grads: Mapping[str, Grads]) -> pd.DataFrame:
    """`cosine_matrix` per layer (parameters grouped by `layer_of`), with a "layer" column first.

    forget_grads, retain_grads: {task: {param name: tensor}}, the same names for every task.
    """
    names = list(next(iter(forget_grads.values())))
    layers: dict[str, list[str]] = {}
    for name in names:
        layers.setdefault(layer_of(name), []).append(name)
    rows = []
    for layer, members in layers.items():
        rows += [{"layer": layer, **_row(f, r, flatten({n: gf[n] for n in members}),
                                         flatten({n: gr[n] for n in members}))}
                 for f, gf in forget_grads.items() for r, gr in retain_grads.items()]
    return pd.DataFrame(rows, columns=["layer", *_COLUMNS])


def task_gradients(model: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                   tasks: Mapping[str, TaskSpec], names: Iterable[str] | None = None) -> dict[str, Grads]:
    """Gradient of each task's mean loss over `batch` on the parameters `names` (default: all).

    batch: {"image": (B, 3, H, W), task: (B, ...)} on the model's device.
    Returns {task: {param name: tensor}}; `flatten` one for a (P,) vector.
    """
    wanted = None if names is None else set(names)
    params = {n: p for n, p in model.named_parameters() if wanted is None or n in wanted}
    outputs = model(batch["image"])
    return {name: {n: g.detach() for n, g in
                   gradients(spec.loss(outputs[name], batch[name]), params, retain_graph=True).items()}
            for name, spec in tasks.items()}


def at_risk_instances(per_sample: torch.Tensor, update: torch.Tensor, ids: Sequence[int],
                      k: int = 5) -> pd.DataFrame:
    """Retain instances whose gradient is most aligned with / opposed to the unlearning update.

    Args:
        per_sample: (N, P) per-sample retain gradients (`flatten(per_sample_grads(...), 1)`).
        update: (P,) the unlearning update direction; ids: the N instance ids; k: per side.
    Returns:
        Rows id, cosine, angle_deg, side ("aligned": largest cosines first, then "opposed":
        smallest first), rank (1-based within its side). With N < 2k an instance may be on both.
    """
    if per_sample.shape[0] != len(ids):
        raise ValueError(f"per_sample has {per_sample.shape[0]} rows but {len(ids)} ids were given")
    g, u = per_sample.double().reshape(len(ids), -1), update.double().reshape(-1)
    cos = (g @ u / (g.norm(dim=1) * u.norm()).clamp(min=1e-30)).clamp(-1, 1)  # (N,)
    k = min(k, len(ids))
    rows = []
    for side, order in (("aligned", cos.argsort(descending=True)), ("opposed", cos.argsort())):
        for rank, i in enumerate(order[:k].tolist(), start=1):
            c = cos[i].item()
            rows.append({"id": ids[i], "cosine": c, "angle_deg": math.degrees(math.acos(c)),
                         "side": side, "rank": rank})
    return pd.DataFrame(rows, columns=["id", "cosine", "angle_deg", "side", "rank"])


@dataclass
class ConflictReport:
    """What `analyze_conflicts` returns.

    overall: `cosine_matrix` rows (forget_task, retain_task, cosine, angle_deg, conflict) on
        the shared parameters; by_layer: the same per shared layer ("layer" column first);
        at_risk: `at_risk_instances` rows (id, cosine, angle_deg, side, rank) of retain ids.
    """

    overall: pd.DataFrame
    by_layer: pd.DataFrame
    at_risk: pd.DataFrame
    retain_ids: list[int]


def analyze_conflicts(model: torch.nn.Module, request, data, retain_sample: int = 32,
                      top_k: int = 10, seed: int = 0) -> ConflictReport:
    """Gradient-conflict analysis of one forget request on the model's shared parameters.

    Forget gradients g_F,t: gradient of target task t's mean loss on the forget instances.
    Retain gradients g_R,t: gradient of task t's mean loss on a fixed retain sample
    (`fixed_retain_sample(request, retain_sample, seed)`), for every task; in partial mode also
    each kept task on the forget instances, labelled "<task> (kept)".

    At-risk instances: the per-sample gradient g_i of each sampled retain instance (summed loss of
    every task, shared parameters, torch.func via `per_sample_grads`) against the unlearning
    update direction u = -grad L_F, L_F the summed target-task forget loss. u is the
    pseudo-gradient of gradient ascent on L_F (an optimizer step moves the parameters by -lr * u,
    i.e. up L_F), so to first order instance i's loss changes by -lr * g_i . u: "aligned"
    instances (cosine > 0) gain from the update, "opposed" ones (cosine < 0) lose the most and
    are the ones exposed to instance-level interference. `top_k` instances per side.

    The model is put in eval mode for the analysis (its mode is restored after) and never
    modified: gradients come from torch.autograd.grad / torch.func, no .grad is written.
    """
    from core.evaluation.metrics import fixed_retain_sample
    from core.unlearning.subspaces import sample_loss, shared_names

    tasks: dict[str, TaskSpec] = dict(data.train.tasks)
    target = {t: tasks[t] for t in request.tasks}
    kept = {t: tasks[t] for t in request.kept_tasks}
    names = shared_names(model)
    device = next(model.parameters()).device
    retain_ids = fixed_retain_sample(request, retain_sample, seed)

    def batch(ids):
        return {k: v.to(device) for k, v in data.train.batch(list(ids)).items()
                if isinstance(v, torch.Tensor)}

    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            on_forget = task_gradients(model, batch(request.instances), {**target, **kept}, names)
            forget = {t: on_forget[t] for t in target}
            retain_batch = batch(retain_ids)
            retain = task_gradients(model, retain_batch, tasks, names)
            retain.update({f"{t} (kept)": on_forget[t] for t in kept})
            per_sample = flatten(per_sample_grads(model, retain_batch, sample_loss(tasks), names), 1)
    finally:
        model.train(was_training)
    update = -cast(torch.Tensor, sum(flatten(g) for g in forget.values()))
    return ConflictReport(overall=cosine_matrix(forget, retain),
                          by_layer=cosine_matrix_by_layer(forget, retain),
                          at_risk=at_risk_instances(per_sample.detach(), update, retain_ids, top_k),
                          retain_ids=retain_ids)
