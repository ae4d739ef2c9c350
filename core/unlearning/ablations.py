"""Variants of interference_aware, each the method with one part changed, and controls that lend its
calibrated target to baselines.

Each is a registered method (its own search space; in the bench a variant runs at ours' tuned
choice unless the plan tunes variants), so the benchmark can say what each part of
interference_aware contributes. Ours runs TGP and IGO in every mode, a separate repair step, the
kept tasks' output basis, IGO against the kept pairs and the target in metric space; a variant
fixes its switches (each accepts only the variant's own value):

- `interference_aware_no_tgp`: no task-aware gradient projection (`tgp="never"`);
- `interference_aware_no_igo`: no instance orthogonalisation (`igo="never"`);
- `interference_aware_fixed`: no calibrated target: plain ascent on the forget pairs for
  `steps` steps, no band, no stop, no back-off (`target="fixed"`);
- `interference_aware_joint`: one optimiser step for the repair and the forget direction,
  projected together (`repair="projected"`);
- `interference_aware_every`: every task's output basis, the target task's included, and no
  saturation rule (`output_basis="every"`, `saturation=1`);
- `interference_aware_retain_igo`: IGO against the retain samples only (`igo_kept=False`);
  in full mode it runs ours' code (there are no kept pairs);
- `interference_aware_loss_stop`: the target in loss space (`stop="loss"`, `tolerance` and
  `match` searched in place of `band`);
- `interference_aware_by_mode`: TGP in partial-task requests only and IGO in full-task ones
  (`tgp="partial"`, `igo="full"`): in each mode it is ours less the other part;
- `interference_aware_v1`: all of the above at once: the first version of the method.

Controls:
- `neggrad_plus_calibrated`, `gpm_calibrated`: NegGrad+ and GPM with a calibrated target and
  stopping rule in place of plain ascent: tau_t = the original model's mean loss on
  `calibration_batch` calibration instances per target task; each step the forget term of task
  t ascends its mean forget loss while it is below tau_t (1 - tolerance), descends it while
  above tau_t (1 + tolerance) and is off in between; the run stops once every target task is
  inside its dead zone (the first step always runs), or after `steps` steps.

`VARIANTS`: the variants of ours, which are not baselines (`core.evaluation.benchmark.headline`
leaves them out of the strongest-baseline pool).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.unlearning.base import knob, register
from core.unlearning.gpm import GPM, GPMConfig
from core.unlearning.interference_aware import (
    InterferenceAware,
    InterferenceAwareConfig,
    calibration_losses,
    forget_signs,
)
from core.unlearning.neggrad_plus import NegGradPlus, NegGradPlusConfig
from core.unlearning.search import Choice, Range, without

_OFF = "changed in this variant"


def _fixed(value: Any) -> Any:
    """A switch the variant fixes at `value`."""
    return knob(value, help=_OFF, choices=(value,))


@dataclass
class NoTGPConfig(InterferenceAwareConfig):
    tgp: str = _fixed("never")


@dataclass
class NoIGOConfig(InterferenceAwareConfig):
    igo: str = _fixed("never")


@dataclass
class FixedTargetConfig(InterferenceAwareConfig):
    target: str = _fixed("fixed")


@dataclass
class JointConfig(InterferenceAwareConfig):
    repair: str = _fixed("projected")


@dataclass
class EveryConfig(InterferenceAwareConfig):
    output_basis: str = _fixed("every")
    saturation: float = knob(1.0, 1.0, 1.0, _OFF)


@dataclass
class RetainIGOConfig(InterferenceAwareConfig):
    igo_kept: bool = _fixed(False)


@dataclass
class LossStopConfig(InterferenceAwareConfig):
    stop: str = _fixed("loss")


@dataclass
class ByModeConfig(InterferenceAwareConfig):
    tgp: str = _fixed("partial")
    igo: str = _fixed("full")


@dataclass
class V1Config(ByModeConfig):
    repair: str = _fixed("projected")
    output_basis: str = _fixed("every")
    saturation: float = knob(1.0, 1.0, 1.0, _OFF)
    igo_kept: bool = _fixed(False)
    stop: str = _fixed("loss")


_OURS = InterferenceAware.search_space
_LOSS_TARGET = {"tolerance": Range(0.0, 0.3), "match": Choice(("mean", "quantiles"))}


def _variant(name: str, config: type, summary: str, space: dict) -> type:
    """Register `interference_aware_<name>`: ours with `config`'s switches."""
    title = f"InterferenceAware_{name}"
    cls = type(title, (InterferenceAware,),
               {"__module__": __name__, "__qualname__": title,
                "__doc__": f"interference_aware with {summary}.",
                "name": f"interference_aware_{name}", "config_class": config,
                "summary": f"variant of ours: {summary}", "search_space": space})
    return register(cls)


_variant("no_tgp", NoTGPConfig, "no task-aware gradient projection",
         without(_OURS, ("basis_budget", "saturation")))
_variant("no_igo", NoIGOConfig, "no instance orthogonalisation", _OURS)
_variant("fixed", FixedTargetConfig, "no calibrated target (plain ascent, all steps)",
         without(_OURS, ("band", "backoff_full", "backoff_partial")))
_variant("joint", JointConfig, "one projected step for the repair and the forget direction", _OURS)
_variant("every", EveryConfig, "every task's output basis and no saturation rule",
         without(_OURS, ("saturation",)))
_variant("retain_igo", RetainIGOConfig, "IGO against the retain samples only", _OURS)
_variant("loss_stop", LossStopConfig, "the target in loss space",
         {**without(_OURS, ("band",)), **_LOSS_TARGET})
_variant("by_mode", ByModeConfig, "TGP in partial-task requests only and IGO in full-task ones", _OURS)
_variant("v1", V1Config, "the first version's parts (TGP by mode, one projected step, every task's "
         "output basis, IGO against the retain samples, the target in loss space)",
         {**without(_OURS, ("band", "saturation")), **_LOSS_TARGET,
          "basis_budget": Range(0.02, 1.0, log=True, modes=("partial",))})


@dataclass
class CalibratedKnobs:
    tolerance: float = knob(0.0, 0.0, 1.0, "dead zone around tau_t, as a share of tau_t; the run "
                                           "stops when every target task is inside")
    calibration_batch: int = knob(64, 1, 100_000, "calibration instances tau_t is measured on")


class CalibratedStop:
    """Mixin for a `StepUnlearner` whose step descends `forget_objective(ctx, forget_losses)`
    ({target task: mean forget loss}): the forget term follows the calibrated target, and the
    run stops once every target task is inside its dead zone."""

    _stopped_at = 0

    def total_steps(self) -> int:
        return self._stopped_at or self.config.steps

    def prepare(self, ctx) -> None:
        super().prepare(ctx)
        unseen = ctx.calibration_batch(self.config.calibration_batch)
        self.targets = {t: c.mean() for t, c in calibration_losses(ctx, unseen, ctx.original).items()}
        self.signs: dict[str, float] = {}

    def forget_objective(self, ctx, forget_losses):
        """sum_t s_t L_F,t, s_t = -1 (ascend) below the dead zone, +1 above, 0 inside."""
        self.signs = {t: float(forget_signs({t: loss.detach().reshape(1)},
                                            {t: self.targets[t].reshape(1)},
                                            self.config.tolerance, "mean")[t])
                      for t, loss in forget_losses.items()}
        return sum(self.signs[t] * loss for t, loss in forget_losses.items())

    def unlearn(self, ctx, report) -> dict[str, Any]:
        self._stopped_at, taken = 0, 0
        self.prepare(ctx)
        optimizer = ctx.make_optimizer()
        for step in range(1, self.config.steps + 1):
            optimizer.zero_grad(set_to_none=True)
            forget, retain = self.step(ctx)
            if step > 1 and not any(self.signs.values()):
                self._stopped_at = step
                report(step, forget, retain)
                break
            optimizer.step()
            taken += 1
            report(step, forget, retain)
        return {**self.extras(ctx), "targets": {t: float(v) for t, v in self.targets.items()},
                "steps_taken": taken, "stopped_early": bool(self._stopped_at)}


@dataclass
class NegGradPlusCalibratedConfig(NegGradPlusConfig, CalibratedKnobs):
    pass


@dataclass
class GPMCalibratedConfig(GPMConfig, CalibratedKnobs):
    pass


@register
class NegGradPlusCalibrated(CalibratedStop, NegGradPlus):
    name = "neggrad_plus_calibrated"
    config_class = NegGradPlusCalibratedConfig
    summary = "control: neggrad_plus with interference_aware's calibrated target and stopping rule"
    search_space = {**NegGradPlus.search_space, "tolerance": Range(0.0, 0.3)}


@register
class GPMCalibrated(CalibratedStop, GPM):
    name = "gpm_calibrated"
    config_class = GPMCalibratedConfig
    summary = "control: gpm with interference_aware's calibrated target and stopping rule"
    search_space = {**GPM.search_space, "tolerance": Range(0.0, 0.3)}


VARIANTS = tuple(f"interference_aware_{name}" for name in (
    "no_tgp", "no_igo", "fixed", "joint", "every", "retain_igo", "loss_stop", "by_mode", "v1"))
"""The registered variants of interference_aware (ablations, not baselines)."""
