"""Ablations of interference_aware, and controls that lend its calibrated target to baselines.

Each is a registered method, tuned like every other (its own search space, the same number of
trials), so the benchmark can say what each part of interference_aware contributes:

- `interference_aware_both`: TGP and IGO in every mode (ours picks one part per mode);
- `interference_aware_no_tgp`: IGO in every mode, no TGP (`tgp="never"`): ours in full mode;
- `interference_aware_no_igo`: TGP in every mode, no IGO (`igo="never"`): ours in partial mode;
- `interference_aware_fixed`: `interference_aware_both` without the calibrated target: plain
  ascent on the forget pairs for `steps` steps, no dead zone, no stop, no back-off
  (`target="fixed"`);
- `neggrad_plus_calibrated`, `gpm_calibrated`: NegGrad+ and GPM with interference_aware's
  calibrated target and stopping rule in place of plain ascent: tau_t = the original model's
  mean loss on `calibration_batch` calibration instances per target task; each step the forget
  term of task t ascends its mean forget loss while it is below tau_t (1 - tolerance), descends
  it while above tau_t (1 + tolerance) and is off in between; the run stops once every target
  task is inside its dead zone (the first step always runs), or after `steps` steps.

The v2 candidates (each part of interference_aware v2 as a switch of the same method, kept or
dropped by a decision on the tuning seed, benchmarks/DECISIONS.md):

- `interference_aware_v2`: TGP and IGO in every mode, with all three v2 parts: the forget step
  and the repair each with its own optimiser, only the forget step projected
  (`repair="separate"`); the output-side basis from the kept tasks only, dropped (GPM's
  input-side projection) in layers where it spans more than `saturation` of the channels
  (`output_basis="kept"`, `saturation` searched); IGO also against the kept tasks' per-sample
  gradients on the forget images in partial mode (`igo_kept`);
- `interference_aware_v2_metric`: v2 with its target in metric space (`stop="metric"`): the
  forget images' mean primary metric steered into the band where an unseen set of their size
  would be, and the run stopped there;
- `interference_aware_v2_joint`, `interference_aware_v2_every`, `interference_aware_v2_retain_igo`:
  v2 less one part (one projected step; every task's output basis and no saturation rule; IGO
  against the retain samples only).

In a variant the parts are fixed: each switch accepts only the variant's own value.

`VARIANTS`: these variants of ours, which are not baselines (`core.evaluation.benchmark.headline`
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
from core.unlearning.search import Range, without

_OFF = "switched off in this ablation"


_EVERY = "on in every mode in this variant"


@dataclass
class BothConfig(InterferenceAwareConfig):
    tgp: str = knob("always", help=_EVERY, choices=("always",))
    igo: str = knob("always", help=_EVERY, choices=("always",))


@dataclass
class NoTGPConfig(InterferenceAwareConfig):
    tgp: str = knob("never", help=_OFF, choices=("never",))
    igo: str = knob("always", help=_EVERY, choices=("always",))


@dataclass
class NoIGOConfig(InterferenceAwareConfig):
    tgp: str = knob("always", help=_EVERY, choices=("always",))
    igo: str = knob("never", help=_OFF, choices=("never",))


@dataclass
class FixedTargetConfig(BothConfig):
    steps: int = knob(25, 1, 100_000, "optimisation steps (all of them run: there is no target to stop at)")
    target: str = knob("fixed", help=_OFF + ": plain ascent on the forget pairs", choices=("fixed",))


_BASES = {"basis_budget": Range(0.02, 1.0, log=True)}
"""TGP's basis memory budget (it sets the ranks; the energy thresholds act only above it),
searched in every mode where TGP runs in every mode."""


@register
class InterferenceAwareBoth(InterferenceAware):
    name = "interference_aware_both"
    config_class = BothConfig
    summary = "ablation: interference_aware with TGP and IGO in every mode"
    search_space = {**InterferenceAware.search_space, **_BASES}


@register
class InterferenceAwareNoTGP(InterferenceAware):
    name = "interference_aware_no_tgp"
    config_class = NoTGPConfig
    summary = "ablation: interference_aware with IGO in every mode and no task-aware gradient projection"
    search_space = without(InterferenceAware.search_space, ("basis_budget",))


@register
class InterferenceAwareNoIGO(InterferenceAware):
    name = "interference_aware_no_igo"
    config_class = NoIGOConfig
    summary = "ablation: interference_aware with TGP in every mode and no instance orthogonalisation"
    search_space = InterferenceAwareBoth.search_space


@register
class InterferenceAwareFixed(InterferenceAware):
    name = "interference_aware_fixed"
    config_class = FixedTargetConfig
    summary = "ablation: interference_aware_both without the calibrated target (plain ascent, fixed steps)"
    search_space = without(InterferenceAwareBoth.search_space,
                           ("tolerance", "backoff_full", "backoff_partial", "match"))


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


VARIANTS = ("interference_aware_both", "interference_aware_no_tgp", "interference_aware_no_igo",
            "interference_aware_fixed", "interference_aware_v2", "interference_aware_v2_joint",
            "interference_aware_v2_every", "interference_aware_v2_retain_igo", "interference_aware_v2_metric")
"""The registered variants of interference_aware (ablations, not baselines)."""


_V2 = "fixed in this v2 variant"


@dataclass
class V2Config(BothConfig):
    repair: str = knob("separate", help=_V2, choices=("separate",))
    output_basis: str = knob("kept", help=_V2, choices=("kept",))
    saturation: float = knob(0.9, 0.0, 1.0, "a layer whose output basis spans more than this share of "
                             "its channels is projected on the input side alone, as GPM")
    igo_kept: bool = knob(True, help=_V2, choices=(True,))


@dataclass
class V2MetricConfig(V2Config):
    stop: str = knob("metric", help="the target in metric space in this v2 variant", choices=("metric",))


@dataclass
class V2JointConfig(V2Config):
    repair: str = knob("projected", help=_OFF, choices=("projected",))


@dataclass
class V2EveryConfig(V2Config):
    output_basis: str = knob("every", help=_OFF, choices=("every",))
    saturation: float = knob(1.0, 1.0, 1.0, _OFF)


@dataclass
class V2RetainIGOConfig(V2Config):
    igo_kept: bool = knob(False, help=_OFF, choices=(False,))


_SATURATION = {"saturation": Range(0.5, 1.0)}


@register
class InterferenceAwareV2(InterferenceAware):
    name = "interference_aware_v2"
    config_class = V2Config
    summary = "v2 candidate: separate repair step, kept-task output basis, IGO against the kept pairs"
    search_space = {**InterferenceAwareBoth.search_space, **_SATURATION}


@register
class InterferenceAwareV2Metric(InterferenceAware):
    name = "interference_aware_v2_metric"
    config_class = V2MetricConfig
    summary = "v2 candidate: the calibrated target in metric space (the unseen band of the primary metric)"
    search_space = {**without(InterferenceAwareV2.search_space, ("tolerance", "match")),
                    "band": Range(0.25, 3.0, log=True)}


@register
class InterferenceAwareV2Joint(InterferenceAware):
    name = "interference_aware_v2_joint"
    config_class = V2JointConfig
    summary = "v2 ablation: one optimiser step for the repair and the forget direction, projected together"
    search_space = InterferenceAwareV2.search_space


@register
class InterferenceAwareV2Every(InterferenceAware):
    name = "interference_aware_v2_every"
    config_class = V2EveryConfig
    summary = "v2 ablation: every task's output basis, no saturation rule"
    search_space = InterferenceAwareBoth.search_space


@register
class InterferenceAwareV2RetainIGO(InterferenceAware):
    name = "interference_aware_v2_retain_igo"
    config_class = V2RetainIGOConfig
    summary = "v2 ablation: IGO against the retain samples only"
    search_space = InterferenceAwareV2.search_space
