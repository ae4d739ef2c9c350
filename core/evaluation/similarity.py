"""Layer-wise similarity of two models' representations: linear CKA (Kornblith et al., 2019,
"Similarity of Neural Network Representations Revisited") per shared layer and per task head.

For the same N instances, X (N, p) and Y (N, q) are two layers' activations (a feature map
flattened per instance), columns centred:

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)
              = <K, L>_F / (||K||_F ||L||_F),  K = H X X^T H, L = H Y Y^T H, H = I - 11^T / N,

1 for representations equal up to an orthogonal transform and an isotropic scaling, near 0 for
unrelated ones. Everything is float64. `layer_similarity` captures the activations with forward
hooks on each shared Conv2d / Linear layer (`subspaces.layers_of` on the shared parameters), on
each task head's layers and on each task's output, on forget, retain-sample and test instances:
where in the network a model changed, and whether the kept tasks' heads moved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from core.evaluation.metrics import fixed_retain_sample
from core.models import check_model
from core.requests import ForgetRequest
from core.unlearning.subspaces import layers_of, shared_names

SPLITS = ("forget", "retain", "test")
OUTPUT = "output"
"""The layer name of a task's prediction (the model's forward result for the task)."""


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.detach().reshape(x.shape[0], -1).double()


def centered_gram(x: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """H X X^T H of activations x (N, ...) flattened per instance: (N, N) float64 on the CPU.
    X X^T is summed over blocks of `chunk` features, so a float64 copy of at most N x chunk
    values exists at a time (a dense layer's maps can hold millions of values per instance)."""
    flat = x.detach().reshape(x.shape[0], -1)
    gram = torch.zeros(flat.shape[0], flat.shape[0], dtype=torch.float64, device=flat.device)
    for start in range(0, flat.shape[1], chunk):
        block = flat[:, start:start + chunk].double()
        gram += block @ block.T
    centring = torch.eye(flat.shape[0], dtype=torch.float64, device=flat.device) - 1.0 / flat.shape[0]
    return (centring @ gram @ centring).cpu()


def gram_cka(k: torch.Tensor, l_: torch.Tensor) -> float:
    """Linear CKA of two centred Gram matrices (N, N) of the same instances; NaN when either
    representation is constant over the instances."""
    denominator = (k.norm() * l_.norm()).item()
    return (k * l_).sum().item() / denominator if denominator > 0 else float("nan")


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of activations x (N, ...) and y (N, ...) of the same N instances (each
    flattened per instance, float64): the feature form with p x q products when both have fewer
    features than instances, else the N x N Gram form (`centered_gram`, `gram_cka`)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA compares two representations of the same instances; got {x.shape[0]} "
                         f"and {y.shape[0]} rows")
    x, y = _flat(x), _flat(y)
    if max(x.shape[1], y.shape[1]) >= x.shape[0]:
        return gram_cka(centered_gram(x), centered_gram(y))
    x, y = x - x.mean(dim=0), y - y.mean(dim=0)
    denominator = ((x.T @ x).norm() * (y.T @ y).norm()).item()
    return (y.T @ x).norm().item() ** 2 / denominator if denominator > 0 else float("nan")


def similarity_layers(model: nn.Module) -> dict[str, tuple[nn.Module | None, str]]:
    """{layer name: (module, part)} of the layers compared, in model order: each shared Conv2d /
    Linear layer (part "shared"), then per task its head's layers and "<task> output" (module
    None: the forward result), part the task's name."""
    layers: dict[str, tuple[nn.Module | None, str]] = {
        name: (module, "shared") for name, module in layers_of(model, shared_names(model)).items()}
    names = {id(p): name for name, p in model.named_parameters()}
    multi = check_model(model)
    for task in multi.tasks:
        head = [names[id(p)] for p in multi.task_parameters(task)]
        layers.update({name: (module, task) for name, module in layers_of(model, head).items()})
        layers[f"{task} {OUTPUT}"] = (None, task)
    return layers


@torch.no_grad()
def layer_grams(model: nn.Module, dataset, ids: Sequence[int]) -> dict[str, torch.Tensor]:
    """{layer name (`similarity_layers`): centred Gram (N, N)} of `model`'s activations on the
    instances `ids` of `dataset`, in one forward pass (eval mode, the model's device); each
    layer's Gram is taken in its hook, so no activation outlives its layer. A module called
    more than once per forward keeps its first output."""
    layers = similarity_layers(model)
    grams: dict[str, torch.Tensor] = {}

    def hook(name):
        def keep(_module, _inputs, output):
            if name not in grams:
                grams[name] = centered_gram(output[0] if isinstance(output, (tuple, list)) else output)
        return keep

    handles = [module.register_forward_hook(hook(name)) for name, (module, _) in layers.items()
               if module is not None]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        outputs = model(dataset.batch(list(ids))["image"].to(device))
        for task in check_model(model).tasks:
            grams[f"{task} {OUTPUT}"] = centered_gram(outputs[task])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: grams[name] for name in layers if name in grams}


def split_ids(data, request: ForgetRequest, sample: int = 32, seed: int = 0, heldout: str = "test"
              ) -> dict[str, tuple[object, list[int]]]:
    """{split: (dataset, ids)} of `SPLITS`: the first `sample` forget instances (sorted), the
    retain sample (`fixed_retain_sample`) and `sample` instances of the val split's `heldout`
    part (a fixed random choice by `seed`)."""
    val, heldout_ids = data.held_out(heldout)
    if len(heldout_ids) > sample:
        picks = np.random.default_rng(seed).choice(len(heldout_ids), size=sample, replace=False)
        heldout_ids = sorted(heldout_ids[i] for i in picks)
    return {"forget": (data.train, sorted(request.instances)[:sample]),
            "retain": (data.train, fixed_retain_sample(request, sample, seed)),
            "test": (val, list(heldout_ids))}


def layer_similarity(models: Mapping[str, nn.Module], pairs: Sequence[tuple[str, str]], data,
                     request: ForgetRequest, sample: int = 32, seed: int = 0,
                     heldout: str = "test") -> pd.DataFrame:
    """Linear CKA of each pair of models, per layer (`similarity_layers`) and split.

    Args:
        models: {name: model}, all of one architecture (e.g. original, unlearned, oracle).
        pairs: (a, b) names of `models` to compare, e.g. [("unlearned", "original")].
        data: `UnlearningData` built from the full val split; request: the forget request.
        sample, seed, heldout: the instances of each split (`split_ids`).
    Returns:
        Rows layer, part ("shared" or the task), pair ("a vs b"), split, cka, instances (N), in
        layer order, then split, then pair. A split with fewer than 2 instances has no rows.
    """
    unknown = sorted({name for pair in pairs for name in pair} - set(models))
    if unknown:
        raise ValueError(f"models {', '.join(unknown)} are not among those given; accepted: "
                         f"{', '.join(models)}")
    used = list(dict.fromkeys(name for pair in pairs for name in pair))
    parts = {name: part for name, (_, part) in similarity_layers(models[used[0]]).items()}
    rows = []
    for split, (dataset, ids) in split_ids(data, request, sample, seed, heldout).items():
        if len(ids) < 2:
            continue
        grams = {name: layer_grams(models[name], dataset, ids) for name in used}
        for layer, part in parts.items():
            for a, b in pairs:
                rows.append({"layer": layer, "part": part, "pair": f"{a} vs {b}", "split": split,
                             "cka": gram_cka(grams[a][layer], grams[b][layer]), "instances": len(ids)})
    frame = pd.DataFrame(rows, columns=["layer", "part", "pair", "split", "cka", "instances"])
    order = {layer: index for index, layer in enumerate(parts)}
    return frame.sort_values("layer", key=lambda column: column.map(order), kind="stable",
                             ignore_index=True)
