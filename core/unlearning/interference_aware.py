"""interference_aware (ours, docs/ARCHITECTURE.md section 8): forgetting steered to where unseen data
sits, with task-aware gradient projection (TGP) and instance-level gradient orthogonalisation
(IGO) on the forget step, and a repair step of its own.

Each step has two parts: a forget step, shaped by IGO and TGP, and a repair step that holds what
must stay; each has its own optimiser (`repair="separate"`), the forget step at (1 - alpha) x lr
and the repair at alpha x lr, and only the forget step is projected.

1. Target in metric space (`stop="metric"`). Before the first step the original model's primary
   metric of each target task is read on each of `calibration_batch` calibration images (data
   the model never saw). Each step reads the forget images' mean primary metric on the model
   being unlearned: while a task's mean is better than the unseen level by more than `band`
   standard errors of a mean over the forget batch, its forget term ascends the task's loss;
   while worse by more than that, it descends it; inside the band it is off. The run stops once
   every target task is inside (the first step always runs), or after `steps` steps. When a task
   as a whole crosses its target, the learning rate is multiplied by the back-off factor
   (`backoff_partial` or `backoff_full`, by the request's mode) and the optimisers' moments are
   cleared. `stop="loss"` puts the target in loss space instead: the forget losses against the
   calibration losses, within a dead zone of `tolerance`, by the mean or by rank (`match`),
   measured on the original or again each step (`track`). `target="fixed"`: no target, every
   step ascends every forget loss for `steps` steps.
2. IGO on every tensor the forget losses reach (shared encoder and target heads): the forget
   direction loses its component in the span of this step's retain batch's per-sample gradients
   (`retain_batch`; `gradients.per_sample_grads`, hooks where exact, vmap elsewhere; removed
   through their Gram matrix, `projections.project_out_rows`) and, in partial-task requests, in
   the span of the kept tasks' per-sample gradients on the forget images themselves
   (`igo_kept`): the kept pairs the update would disturb first. With `conflict_only` only the
   retain samples it conflicts with are removed. The same per-sample gradients, averaged, give
   the retain gradient.
3. TGP on every shared Conv2d / Linear layer: dW <- dW - V V^T dW U U^T (bias: db - V V^T db),
   U the basis of the layer's inputs (im2col) on kept data, V the union of the kept tasks'
   backward-signal bases (`output_basis="kept"`: the target task's own directions are not
   guarded). A full-task request has no kept task, and a layer whose V spans more than
   `saturation` of its channels guards nearly all of them: both get GPM's input-side projection,
   dW <- dW - dW U U^T (`saturated`). Kept data: a retain sample (`subspace_batch`) and, in
   partial mode, the forget instances with the kept tasks. Bases are computed before the first
   step and every `refresh` steps (`subspaces.layer_subspaces`: input bases from the whole
   retain sample, output bases from the backward signals of its first `signal_batch`
   instances; each the fewest leading directions holding its energy threshold `eps_in` /
   `eps_out`, `solver` "leading" by subspace iteration; all bases within `basis_budget` of the
   model's parameter memory). BatchNorm affine parameters are left to IGO. With `project_step`
   TGP is applied again to the forget optimiser's step: Adam divides each coordinate by its own
   running scale, which would turn a small residue in a guarded direction back into a step of
   full size. `output_basis="every"` takes V from every task, the target task's included.
4. Repair: the retain gradient (every task's retain loss) plus, in partial mode, `kept_weight` x
   a consistency term on the kept pairs: the mean squared gap between the model's kept-task
   outputs on the forget instances and the original model's (kept drift counts a change either
   way). The forget losses never reach a kept task's head, so those heads move only through the
   repair. `repair="projected"` takes one optimiser step on alpha x repair + (1 - alpha) x the
   shaped forget direction, projected as a whole.

`tgp` and `igo` say in which request modes each part runs (`PART_MODES`: both in every mode by
default). The variants in `core.unlearning.ablations` are this method with one part changed.

Sign convention: `.grad` holds the direction the optimiser descends, so the forget direction of
task t is -grad L_F,t (ascent) where it must forget more and +grad L_F,t where it has forgotten
past its target; IGO's conflict test (<direction, retain sample gradient> < 0) is taken on that
signed direction.

Memory: `memory_budget_mb` covers the whole run beyond the model passed in. What the run holds
(model copies, optimiser states, bases, gradients: `gradients.held_bytes`) is counted first; the
calibration forwards, the forget batch's forward and backward (micro-batches, gradients summed,
where its graph would not fit), the per-sample gradients and the TGP passes get the rest; a
budget below the least that works raises `gradients.MemoryBudgetError` (docs/ARCHITECTURE.md
section 8.5).

Why the defaults are what they are, measured how and on which split: benchmarks/DECISIONS.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from core import distributed
from core.unlearning.base import UnlearnConfig, Unlearner, knob, register
from core.unlearning.gradients import (
    DEFAULT_MEMORY_BUDGET_MB,
    WORKING_FACTOR,
    budget_chunk,
    gradients,
    held_bytes,
    per_sample_chunk,
    per_sample_grads,
    per_sample_room,
    room_mb,
    saved_bytes,
    set_grads,
)
from core.unlearning.projections import orthogonalize
from core.unlearning.search import SHARED, Range
from core.unlearning.subspaces import (
    layer_subspaces,
    layers_of,
    reached_names,
    sample_task_losses,
    shared_names,
    signal_bytes,
)

PART_MODES = ("partial", "full", "always", "never")
"""Where a part (TGP, IGO) runs: in partial-task requests only, in full-task requests only,
in both, or in neither."""


def runs_in(where: str, ctx) -> bool:
    """Whether a part set to `where` (`PART_MODES`) runs for this request."""
    mode = "partial" if ctx.kept_tasks else "full"
    return where == "always" or where == mode


@dataclass
class InterferenceAwareConfig(UnlearnConfig):
    lr: float = knob(4e-4, 1e-7, 10.0, "learning rate")
    steps: int = knob(25, 1, 100_000, "most optimisation steps; the run stops once every target "
                                      "task is at its target")
    retain_batch: int = knob(16, 1, 4096, "retain instances per step (retain term and IGO)")
    alpha: float = knob(0.3, 0.0, 1.0, "weight of the retain gradient; 1 - alpha goes to the "
                                       "projected forget term")
    tolerance: float = knob(0.0, 0.0, 1.0, "dead zone around tau_t, as a share of tau_t; the "
                                            "run stops when every target task is inside")
    backoff_partial: float = knob(0.5, 0.01, 1.0, "learning-rate factor when a task crosses its "
                                                 "target, partial-task; 1: none")
    backoff_full: float = knob(1.0, 0.01, 1.0, "learning-rate factor when a task crosses its "
                                              "target, full-task; 1: none")
    eps_in: float = knob(0.95, 0.0, 1.0, "energy kept in each layer's input basis U")
    eps_out: float = knob(0.95, 0.0, 1.0, "energy kept in each kept task's output basis V_t")
    conflict_only: bool = knob(False, help="IGO removes only the span of conflicting retain "
                                           "samples", choices=(False, True))
    subspace_batch: int = knob(32, 1, 4096, "retain instances the TGP bases are computed on")
    signal_batch: int = knob(8, 1, 4096, "of those, instances whose backward signals give the "
                             "kept tasks' output bases (a backward per task each); the input "
                             "bases use all subspace_batch")
    solver: str = knob("leading", help="how each TGP basis is found: the fewest leading directions "
                       "holding its energy threshold, by subspace iteration (leading), or a full "
                       "eigendecomposition (exact)", choices=("leading", "exact"))
    refresh: int = knob(0, 0, 100_000, "recompute the TGP bases every this many steps; 0: once")
    max_rows: int = knob(1024, 16, 1_000_000, "rows (sample x position) per basis SVD")
    basis_budget: float = knob(0.25, 0.0, 1.0, "memory of all bases / the model's parameter memory")
    calibration_batch: int = knob(64, 1, 100_000, "calibration instances tau_t is measured on")
    track: bool = knob(False, help="measure the calibration losses on the model being unlearned, "
                       "every step, rather than once on the original", choices=(False, True))
    match: str = knob("mean", help="what the forget losses are steered to: each instance to the "
                      "calibration loss at its own rank (quantiles), or the task's mean loss to the "
                      "calibration mean (mean)", choices=("mean", "quantiles"))
    kept_weight: float = knob(1.0, 0.0, 1e4, "weight of the kept-pair consistency term (partial mode)")
    project_step: bool = knob(True, help="apply TGP to the optimiser's step as well as to the gradient",
                              choices=(True, False))
    repair: str = knob("separate", help="one optimiser step for alpha x repair + (1 - alpha) x "
                       "projected forget direction, projected as a whole with project_step "
                       "(projected); or the forget direction and the repair each with its own "
                       "optimiser and learning rate (1 - alpha and alpha of lr), only the forget "
                       "step projected (separate)", choices=("projected", "separate"))
    output_basis: str = knob("kept", help="whose backward signals on the retain sample give the "
                             "output-side basis V: every task's (every), or the kept tasks' only "
                             "(kept; a full-task request has none, so its layers are projected on "
                             "the input side alone, as GPM)", choices=("every", "kept"))
    saturation: float = knob(0.9, 0.0, 1.0, "a layer whose output basis spans more than this share "
                             "of its output channels is projected on the input side alone, as GPM; "
                             "1: never")
    igo_kept: bool = knob(True, help="in partial-task requests IGO also removes the span of the "
                          "kept tasks' per-sample gradients on the forget images",
                          choices=(False, True))
    stop: str = knob("metric", help="where the calibrated target lives: the forget losses against the "
                     "calibration losses (loss), or the forget images' mean primary metric per "
                     "target task against the calibration images', within `band` standard errors "
                     "of a random unseen set of the forget batch's size (metric)",
                     choices=("loss", "metric"))
    band: float = knob(1.0, 0.0, 10.0, "with stop=metric: the half-width of the unseen level's band, "
                       "in standard errors of the mean over a forget batch")
    tgp: str = knob("always", help="in which request modes task-aware gradient projection runs "
                    "on the shared layers", choices=PART_MODES)
    igo: str = knob("always", help="in which request modes the forget direction is orthogonalised "
                    "to the retain per-sample gradients", choices=PART_MODES)
    target: str = knob("calibrated", help="forget towards the calibrated target and stop there "
                       "(calibrated), or ascend every forget loss for all steps (fixed)",
                       choices=("calibrated", "fixed"))
    memory_budget_mb: float = knob(DEFAULT_MEMORY_BUDGET_MB, 64.0, 1e7, "MB the whole run may "
                                   "take beyond the model it is given: what it holds throughout "
                                   "(model copies, optimiser state, gradients, bases) is counted "
                                   "first, and the per-sample gradients, the forget batch's "
                                   "forward and backward, the TGP passes and the calibration "
                                   "forwards get the rest, in chunks of samples (micro-batches "
                                   "for the forget batch); too small a budget is refused, naming "
                                   "the least that works")


def calibration_losses(ctx, batch, model, memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
                       held: int = 0) -> dict[str, torch.Tensor]:
    """`model`'s per-instance loss of each target task on a calibration batch, sorted
    ascending: {task: (N,)} (`instance_losses`)."""
    losses = instance_losses(ctx, batch, model, memory_budget_mb, held)
    return {t: values.sort().values for t, values in losses.items()}


def instance_losses(ctx, batch, model, memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
                    held: int = 0) -> dict[str, torch.Tensor]:
    """`model`'s per-instance loss of each target task on `batch`, without a graph: {task: (N,)}.
    No-grad forwards in chunks of images within what `memory_budget_mb` leaves beside the
    `held` bytes the run holds meanwhile (an image counted at what autograd would save for it,
    an upper bound without a graph; `gradients.room_mb`). Under torchrun each rank computes its
    share of the batch and the losses are put together (`core.distributed.rows_of`,
    `gather_rows`)."""
    images = batch["image"]
    share = distributed.rows_of(images)
    first, last = (0, len(images)) if share is None else (share.start, share.stop)
    per_image = saved_bytes(model, images[:1])
    room = room_mb(memory_budget_mb, held, per_image, "the no-grad forwards")
    chunk = budget_chunk(room, per_image, total=max(last - first, 1))
    parts: dict[str, list[torch.Tensor]] = {t: [] for t in ctx.target_tasks}
    with torch.no_grad():
        for start in range(first, last, chunk):
            rows = slice(start, min(start + chunk, last))
            with ctx.autocast():
                outputs = model(images[rows])
            for t, spec in ctx.target_tasks.items():
                parts[t].append(spec.per_sample_loss(outputs[t], batch[t][rows]).float())
    losses = {t: torch.cat(values) for t, values in parts.items()}
    if share is not None:
        losses = {t: distributed.gather_rows(values, share, len(images)) for t, values in losses.items()}
    return losses


def saturated(subspace, threshold: float):
    """`subspace` with its output side dropped (every output direction guarded: GPM's input-side
    projection) when its output basis spans more than `threshold` of the layer's channels."""
    outputs = subspace.outputs
    if outputs is None or threshold >= 1 or outputs.shape[0] == 0:
        return subspace
    if outputs.shape[1] / outputs.shape[0] <= threshold:
        return subspace
    return dataclasses.replace(subspace, outputs=None,
                               ranks={**subspace.ranks, "saturated": outputs.shape[1] / outputs.shape[0]})


def primary_per_image(ctx, model, batch) -> dict[str, torch.Tensor]:
    """`model`'s primary metric of each target task on each image of `batch`: {task: (B,)}
    (NaN for an image with no valid pixel). No gradient."""
    with torch.no_grad(), ctx.autocast():
        outputs = model(batch["image"])
    return {t: spec.per_image_metrics(outputs[t].float(), batch[t])[spec.primary].float()
            for t, spec in ctx.target_tasks.items()}


def metric_signs(forget: dict[str, torch.Tensor], unseen: dict[str, torch.Tensor],
                 band: float) -> dict[str, torch.Tensor]:
    """Per target task, one sign for every forget image from its mean primary metric m_F
    against the unseen images' (mean m_U, standard deviation s_U): -1 (ascend the forget loss)
    while m_F > m_U + band x s_U / sqrt(n), +1 (descend) while m_F < m_U - band x s_U / sqrt(n),
    0 inside, n the number of forget images with a finite metric: forget images are where an
    unseen set of their size would be (the forget-gap noise floor), on the metric a person
    reads, not on the loss."""
    signs = {}
    for task, values in forget.items():
        finite, reference = values[values.isfinite()], unseen[task][unseen[task].isfinite()]
        if not len(finite) or len(reference) < 2:
            signs[task] = torch.zeros_like(values)
            continue
        half = band * float(reference.std()) / len(finite) ** 0.5
        gap = float(finite.mean() - reference.mean())
        sign = -1.0 if gap > half else 1.0 if gap < -half else 0.0
        signs[task] = torch.full_like(values, sign)
    return signs


def instance_targets(losses: torch.Tensor, calibration: torch.Tensor, match: str) -> torch.Tensor:
    """Per-instance targets for one task's forget losses (B,): with "quantiles", the calibration
    loss at each instance's own rank among the forget losses (rank i of B -> quantile
    (i + 0.5) / B); with "mean", the calibration mean for every instance."""
    if match == "mean":
        return calibration.mean().expand_as(losses)
    ranks = losses.detach().argsort().argsort().to(calibration.dtype)
    quantiles = (ranks + 0.5) / losses.numel()
    return torch.quantile(calibration, quantiles.to(calibration.device))


def forget_signs(losses: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                 tolerance: float, match: str) -> dict[str, torch.Tensor]:
    """Per task, -1 (ascend) / +1 (descend) / 0 (inside the dead zone): per instance with
    "quantiles", one sign for the task's mean loss with "mean" (broadcast to its instances)."""
    signs = {}
    for task, loss in losses.items():
        loss, target = loss.detach().float(), targets[task]
        if match == "mean":
            loss, target = loss.mean().expand_as(loss), target.mean().expand_as(loss)
        gap = loss - target
        sign = torch.sign(gap)
        signs[task] = torch.where(gap.abs() <= tolerance * target.abs(), torch.zeros_like(sign), sign)
    return signs


def overall_sign(signs: torch.Tensor, losses: torch.Tensor, targets: torch.Tensor) -> int:
    """Which side of its target a task is on as a whole: the sign of the mean gap of its
    instances still outside the dead zone (0 when none is)."""
    active = signs != 0
    if not bool(active.any()):
        return 0
    return 1 if float((losses.detach().float() - targets)[active].mean()) > 0 else -1


@register
class InterferenceAware(Unlearner):
    name = "interference_aware"
    config_class = InterferenceAwareConfig
    config: InterferenceAwareConfig
    summary = "ours: forgetting to the unseen level, task-aware projection, per-sample orthogonalisation"
    search_space = {**SHARED, "alpha": Range(0.05, 0.95),
                    "backoff_full": Range(0.1, 1.0, log=True, modes=("full",)),
                    "backoff_partial": Range(0.1, 1.0, log=True, modes=("partial",)),
                    "basis_budget": Range(0.02, 1.0, log=True),
                    "kept_weight": Range(0.1, 10.0, log=True, modes=("partial",)),
                    "saturation": Range(0.5, 1.0), "band": Range(0.25, 3.0, log=True)}

    _stopped_at = 0

    def total_steps(self) -> int:
        return self._stopped_at or self.config.steps

    def unlearn(self, ctx, report):
        cfg = self.config
        self._stopped_at = 0
        unseen = ctx.calibration_batch(cfg.calibration_batch)
        calibration = original = calibration_losses(ctx, unseen, ctx.original, cfg.memory_budget_mb,
                                                    held_bytes(ctx.model, ctx.original))
        unseen_metric = primary_per_image(ctx, ctx.original, unseen) if cfg.stop == "metric" else {}
        model = ctx.model
        params = dict(model.named_parameters())
        layers = layers_of(model, shared_names(model))
        budget = cfg.basis_budget * sum(p.numel() for p in params.values())
        generator = torch.Generator().manual_seed(cfg.seed)
        optimizer = ctx.make_optimizer()
        repair = ctx.make_optimizer() if cfg.repair == "separate" else None
        lr, sides, taken, samples, before, subspaces = cfg.lr, {}, 0, None, None, {}
        self.set_lr(optimizer, repair, lr)

        def held(*more) -> int:  # what the run holds beside the computation about to run
            return held_bytes(model, ctx.original, optimizer, repair, before, subspaces, *more)

        for step in range(1, cfg.steps + 1):
            # the last step's gradients are spent: freed before this step's passes
            optimizer.zero_grad(set_to_none=True)
            if repair is not None:
                repair.zero_grad(set_to_none=True)
            if step == 1 or (cfg.refresh and (step - 1) % cfg.refresh == 0):
                subspaces, projected = {}, {}  # the old bases are not held beside the new
                subspaces = (self.kept_subspaces(ctx, layers, budget, generator, held(samples))
                             if runs_in(cfg.tgp, ctx) else {})
                projected = {f"{layer}.{suffix}": subspace for layer, subspace in subspaces.items()
                             for suffix, _ in layers[layer].named_parameters(recurse=False)}
            forget, retain = ctx.forget_batch(), ctx.retain_batch()
            if cfg.track and step > 1:
                calibration = calibration_losses(ctx, unseen, model, cfg.memory_budget_mb, held(samples))
            # the forget batch in one forward whose graph gives the gradients below, or, where
            # that graph would not fit the budget, its losses without a graph and the gradients
            # micro-batch by micro-batch
            micro = self.forget_micro_batch(ctx, forget, held(samples))
            if micro >= len(forget["image"]):
                forget_losses, kept_gaps = self.forget_losses_and_kept_gaps(ctx, forget)
            else:
                forget_losses = instance_losses(ctx, forget, model, cfg.memory_budget_mb, held(samples))
                kept_gaps = {}
            means = {t: loss.detach().mean() for t, loss in forget_losses.items()}
            targets = {t: instance_targets(loss, calibration[t], cfg.match)
                       for t, loss in forget_losses.items()}
            if cfg.target == "fixed":
                signs = {t: -torch.ones_like(loss.detach().float()) for t, loss in forget_losses.items()}
            elif cfg.stop == "metric":
                signs = metric_signs(primary_per_image(ctx, model, forget), unseen_metric, cfg.band)
            else:
                signs = forget_signs(forget_losses, targets, cfg.tolerance, cfg.match)
            stopping = step > 1 and not any(bool(s.any()) for s in signs.values())
            # the forget gradients before the per-sample pass, so that the forget graph is freed
            # before it (they do not depend on it)
            direction, kept = ({}, {}) if stopping else self.forget_gradients(
                ctx, forget, signs, micro, forget_losses, kept_gaps)
            forget_losses = {t: loss.detach() for t, loss in forget_losses.items()}
            kept_gaps = {}
            # per-sample retain gradients: their mean is the retain gradient (BatchNorm in eval
            # mode), their span is what IGO removes; the same pass gives the retain losses
            # (hooks: a batched pass instead of vmap where that is exact; the last step's
            # gradients, no longer needed, take the new ones instead of a fresh B x P allocation
            # when one chunk takes the whole batch)
            room = per_sample_room(model, retain, None, cfg.memory_budget_mb, held(direction, kept))
            if per_sample_chunk(model, retain, None, room)[0] < len(retain["image"]):
                samples = None
            samples, retain_parts = per_sample_grads(model, retain, sample_task_losses(ctx.tasks),
                                                     has_aux=True, memory_budget_mb=room,
                                                     hooks=True, out=samples)
            retain_losses = {t: part.mean() for t, part in retain_parts.items()}
            if stopping:
                self._stopped_at = step
                report(step, means, retain_losses)
                break
            new_sides = ({t: int(sign.flatten()[0]) if sign.numel() else 0 for t, sign in signs.items()}
                         if cfg.stop == "metric" else
                         {t: overall_sign(signs[t], forget_losses[t], targets[t]) for t in signs})
            if any(sides.get(t, 0) * side < 0 for t, side in new_sides.items()):
                lr *= cfg.backoff_partial if ctx.kept_tasks else cfg.backoff_full
                self.set_lr(optimizer, repair, lr)
                optimizer.state.clear()
                if repair is not None:
                    repair.state.clear()
            sides = new_sides
            keep = {n: g.mean(0) for n, g in samples.items()}
            if kept:
                keep = {n: keep[n] + kept[n] for n in params}
            kept = {}
            spans = (self.kept_sample_grads(ctx, forget, held(samples, direction, keep))
                     if cfg.igo_kept and ctx.kept_tasks else {})
            if any(bool(s.any()) for s in signs.values()):
                direction = self.forget_direction(ctx, direction, samples, subspaces, layers, spans)
            spans = {}
            with torch.no_grad():  # keep[n] is this step's own tensor: scaled in place
                if repair is None:
                    set_grads(model, {n: keep[n].mul_(cfg.alpha).add_(direction[n], alpha=1 - cfg.alpha)
                                      for n in params}, copy=False)
                else:  # the forget step first, alone (projected below); the repair after it
                    set_grads(model, direction, copy=False)
            direction = {}
            if cfg.project_step:
                with torch.no_grad():
                    if before is None or before.keys() != projected.keys():
                        before = {n: params[n].detach().clone() for n in projected}
                    else:
                        for n, value in before.items():
                            value.copy_(params[n])
                optimizer.step()
                self.project_step(params, before, projected)
            else:
                optimizer.step()
            if repair is not None:
                set_grads(model, keep, copy=False)
                repair.step()
            keep = {}
            taken += 1
            report(step, means, retain_losses)
        return {"targets": {t: float(c.mean()) for t, c in original.items()},
                "final_targets": {t: float(c.mean()) for t, c in calibration.items()},
                "steps_taken": taken, "stopped_early": bool(self._stopped_at), "final_lr": lr,
                "subspace_ranks": {name: s.ranks for name, s in subspaces.items()},
                "subspace_bytes": sum(s.nbytes for s in subspaces.values()),
                "model_bytes": sum(p.numel() * p.element_size() for p in params.values())}

    def set_lr(self, optimizer, repair, lr: float) -> None:
        """The learning rate of the step: `lr` for the one optimiser; with a separate repair
        optimiser (1 - alpha) x lr for the forget step and alpha x lr for the repair (Adam
        ignores a gradient's scale, so alpha weighs the two steps through their rates)."""
        alpha = self.config.alpha
        shares = [(optimizer, 1.0)] if repair is None else [(optimizer, 1 - alpha), (repair, alpha)]
        for each, share in shares:
            for group in each.param_groups:
                group["lr"] = lr * share

    @staticmethod
    @torch.no_grad()
    def project_step(params, before, projected) -> None:
        """Replace each projected tensor's optimiser step d by TGP(d): Adam divides every
        coordinate by its own running scale, which turns the small residue that TGP leaves in a
        kept direction back into a step of full size; projecting the step itself removes it.
        (before + TGP(d) = after - removed(d), `LayerSubspace.removed`.)"""
        for name, subspace in projected.items():
            params[name].sub_(subspace.removed(params[name] - before[name]))

    @staticmethod
    def forget_losses_and_kept_gaps(ctx, forget):
        """One forward of the forget instances -> ({target task: per-instance losses (B,)},
        {kept task: mean squared gap between the model's and the original model's outputs on
        these instances})."""
        with ctx.autocast():
            outputs = ctx.model(forget["image"])
            forget_losses = {t: spec.per_sample_loss(outputs[t], forget[t])
                             for t, spec in ctx.target_tasks.items()}
            if not ctx.kept_tasks:
                return forget_losses, {}
            with torch.no_grad():
                anchor = ctx.original(forget["image"])
            gaps = {t: (outputs[t].float() - anchor[t].float()).pow(2).mean() for t in ctx.kept_tasks}
        return forget_losses, gaps

    def kept_subspaces(self, ctx, layers, budget, generator, held: int = 0):
        """TGP bases on kept data: a retain sample (every task, or with `output_basis="kept"`
        only the kept tasks' backward signals), plus in partial mode the forget instances (kept
        tasks). A layer whose output basis spans more than `saturation` of its channels keeps
        its input basis alone (GPM's projection there). The passes get what `memory_budget_mb`
        leaves beside the `held` bytes the run holds meanwhile."""
        cfg = self.config
        kept_only = cfg.output_basis == "kept"
        groups = {"retain": (ctx.retain_batch(cfg.subspace_batch),
                             ctx.kept_tasks if kept_only else ctx.tasks)}
        if ctx.kept_tasks:
            groups["kept"] = (ctx.forget_batch(), ctx.kept_tasks)
        eps_out = None if kept_only and not ctx.kept_tasks else cfg.eps_out
        images = groups["retain"][0]["image"]
        # one signal image, with every group's rows and spectra (`layer_subspaces`)
        task_aware = eps_out is not None
        least = (WORKING_FACTOR + 1) * saved_bytes(ctx.model, images[:1]) + sum(
            sum(signal_bytes(layers, tasks if task_aware else {}, cfg.max_rows))
            for _, tasks in groups.values())
        room = room_mb(cfg.memory_budget_mb, held, least, "the TGP passes")
        subspaces = layer_subspaces(ctx.model, layers, groups, cfg.eps_in, eps_out, budget,
                                    cfg.max_rows, generator, room,
                                    {"retain": cfg.signal_batch}, cfg.solver)
        return {name: saturated(subspace, cfg.saturation) for name, subspace in subspaces.items()}

    def kept_sample_grads(self, ctx, forget, held: int = 0) -> dict[str, torch.Tensor]:
        """Per-sample gradients of the kept tasks' losses on the forget images, on the shared
        parameters: {name: (B, *shape)} (what IGO also removes with `igo_kept`), within what
        `memory_budget_mb` leaves beside the `held` bytes the run holds meanwhile."""
        names = shared_names(ctx.model)
        room = per_sample_room(ctx.model, forget, names, self.config.memory_budget_mb, held)
        grads = per_sample_grads(ctx.model, forget, sample_task_losses(ctx.kept_tasks),
                                 names=names, has_aux=True, memory_budget_mb=room, hooks=True)[0]
        return {name: value.detach() for name, value in grads.items()}

    def forget_micro_batch(self, ctx, forget, held: int) -> int:
        """Forget instances per forward + backward (`forget_gradients`) within what
        `memory_budget_mb` leaves beside the `held` bytes the run holds meanwhile: an instance
        counted at what autograd saves for it x `WORKING_FACTOR` (its graph and backward), the
        gradients formed (one parameter-sized set, two in partial mode) once. The whole batch
        where it fits; MemoryBudgetError when not even one instance does."""
        per_image = WORKING_FACTOR * saved_bytes(ctx.model, forget["image"][:1])
        grads = held_bytes(*ctx.model.parameters()) * (2 if ctx.kept_tasks else 1)
        room = room_mb(self.config.memory_budget_mb, held, grads + per_image,
                       "the forget batch's forward and backward")
        return budget_chunk(room, per_image, grads, len(forget["image"]))

    def forget_gradients(self, ctx, forget, signs, micro: int, losses=None, kept_gaps=None
                         ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(grad sum_t mean_i sign_t,i * l_t,i, grad kept_weight x sum of the kept gaps), l_t,i
        the forget loss of task t on instance i: the first zeros when every sign is 0, the second
        {} in full mode. With `losses` and `kept_gaps` from one forward of the whole batch
        (`forget_losses_and_kept_gaps`), from that graph; else forward + backward `micro`
        instances at a time, the gradients summed over the micro-batches (each term a sum over
        instances / the batch's count, so the sum is the whole batch's gradient up to float
        rounding)."""
        cfg, model = self.config, ctx.model
        params = dict(model.named_parameters())
        active = any(bool(s.any()) for s in signs.values())
        count = len(forget["image"])
        if losses is not None and micro >= count:
            kept = (gradients(cfg.kept_weight * sum(kept_gaps.values()), params, retain_graph=True)
                    if kept_gaps else {})
            if not active:
                return {n: torch.zeros_like(p) for n, p in params.items()}, kept
            objective = sum((signs[t].to(loss.dtype) * loss).mean() for t, loss in losses.items())
            return gradients(objective, params), kept
        direction = {n: torch.zeros_like(p) for n, p in params.items()}
        kept = {n: torch.zeros_like(p) for n, p in params.items()} if ctx.kept_tasks else {}
        if not active and not kept:
            return direction, kept
        for start in range(0, count, micro):
            rows = slice(start, min(start + micro, count))
            part = {key: value[rows] for key, value in forget.items()}
            distributed.mark(part["image"])
            with ctx.autocast():
                outputs = model(part["image"])
                if kept:
                    with torch.no_grad():
                        anchor = ctx.original(part["image"])
                    gap = sum((outputs[t].float() - anchor[t].float()).pow(2).sum()
                              / (count * outputs[t][0].numel()) for t in ctx.kept_tasks)
                    for n, g in gradients(cfg.kept_weight * gap, params, retain_graph=active).items():
                        kept[n] += g
                if active:
                    losses = {t: spec.per_sample_loss(outputs[t], part[t])
                              for t, spec in ctx.target_tasks.items()}
                    objective = sum((signs[t][rows].to(loss.dtype) * loss).sum() / count
                                    for t, loss in losses.items())
                    for n, g in gradients(objective, params).items():
                        direction[n] += g
        return direction, kept

    def forget_direction(self, ctx, direction, samples, subspaces, layers, spans=None):
        """TGP(IGO(`direction`)), `direction` the forget gradient (`forget_gradients`; the
        caller leaves out the zeros of a step whose every sign is 0), in place.

        IGO acts on every tensor the forget losses reach (shared encoder, target heads), against
        the retain per-sample gradients `samples` and, where given, the rows of `spans` too
        (`kept_sample_grads`); TGP on the shared Conv2d / Linear layers.
        """
        for name in reached_names(ctx.model, ctx.target_tasks) if runs_in(self.config.igo, ctx) else ():
            rows = samples[name].reshape(samples[name].shape[0], -1)
            if spans and name in spans:
                rows = torch.cat([rows, spans[name].reshape(spans[name].shape[0], -1)])
            flat = orthogonalize(direction[name].reshape(-1), rows, self.config.conflict_only)
            direction[name] = flat.view_as(direction[name])
        for layer, subspace in subspaces.items():
            for suffix, _ in layers[layer].named_parameters(recurse=False):
                name = f"{layer}.{suffix}"
                direction[name] = subspace.project(direction[name])
        return direction
