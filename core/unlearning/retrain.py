"""retrain: the exact oracle. The original training recipe, run from scratch with the loss of every
forget pair masked out. The reference every approximate method is measured against."""

from __future__ import annotations

from dataclasses import dataclass

from core.models import build_model, load_backbone_weights
from core.training import TrainConfig, seed_everything, train
from core.unlearning.base import UnlearnConfig, Unlearner, knob, register


@dataclass
class RetrainConfig(UnlearnConfig):
    epochs: int = knob(0, 0, 10_000, "training epochs; 0 = the original recipe's")
    train_seed: int = knob(-1, -1, 2**31 - 1, "training seed; -1 = the original recipe's")


@register
class Retrain(Unlearner):
    name = "retrain"
    config_class = RetrainConfig
    config: RetrainConfig
    summary = "oracle: retrain from scratch with the forget pairs masked"

    def recipe(self, ctx) -> TrainConfig:
        recipe = {key: ctx.data.training[key] for key in ("epochs", "batch_size", "lr",
                                                           "weight_decay", "seed")
                  if key in ctx.data.training}
        if self.config.epochs:
            recipe["epochs"] = self.config.epochs
        if self.config.train_seed >= 0:
            recipe["seed"] = self.config.train_seed
        return TrainConfig(**recipe, device=str(ctx.device.type))

    def total_steps(self) -> int:
        return self.config.epochs or self._epochs

    _epochs = 0

    def unlearn(self, ctx, report):
        recipe = self.recipe(ctx)
        self._epochs = recipe.epochs
        seed_everything(recipe.seed)
        fresh = build_model(ctx.data.architecture or ctx.model.architecture, list(ctx.tasks.values()))
        backbone = ctx.data.training.get("backbone_weights")
        if backbone:
            load_backbone_weights(fresh, backbone)

        def on_epoch(epoch, total, losses):
            report(epoch, {}, losses)

        train(fresh, ctx.data.train, recipe, masked_pairs=ctx.request.forget_pairs, progress=on_epoch)
        ctx.model.load_state_dict(fresh.state_dict())
        return {"epochs": recipe.epochs}

