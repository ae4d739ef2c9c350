"""Attribution maps of one task's prediction for one image, before and after unlearning (captum).

A dense task predicts a map, so it is first reduced to one number per image, the *score*, which
the task's kind defines (`TaskKind.explanation_score`); for the built-in kinds:

    segmentation, parts, classification  the logit of one class (averaged over a region for the
                                         per-pixel kinds)
    depth, normal                        the mean of the output channels over a region
    saliency, edges                      the logit of each pixel, averaged over a region

A region is None (the whole image), a rectangle (top, left, height, width) in pixels, or a boolean
(H, W) mask. The attribution methods explain that score in input pixels:

    integrated_gradients  Integrated Gradients from a black image, summed over the colour channels
                          with its sign, so the map adds up to score(image) - score(black).
    layer_gradcam         Grad-CAM (signed, no ReLU) at the last shared encoder block,
                          upsampled bilinearly to the image size.

Positive pixels push the score up, negative ones down. The models are never changed: they run in
eval mode (their previous mode is restored) and only the input receives gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam
from torch import Tensor, nn

from core.models import explain_layer
from core.tasks import TaskSpec

Region = tuple[int, int, int, int] | np.ndarray | Tensor | None
DEFAULT_STEPS = 32


def region_mask(region: Region, size: tuple[int, int]) -> Tensor:
    """The pixels a score averages over, as an (H, W) bool tensor.

    Args:
        region: None (every pixel), a rectangle (top, left, height, width) or an (H, W) bool mask.
        size: (H, W) of the prediction.

    Raises:
        ValueError: a rectangle that is empty or leaves the image, a mask of another shape or
            with no pixel set; the message gives the accepted range.
    """
    height, width = size
    if region is None:
        return torch.ones(height, width, dtype=torch.bool)
    if isinstance(region, (np.ndarray, Tensor)):
        mask = torch.as_tensor(region)
        if mask.dtype != torch.bool or tuple(mask.shape) != (height, width):
            raise ValueError(f"region mask has dtype {mask.dtype} and shape {tuple(mask.shape)}; "
                             f"expected a bool mask of shape ({height}, {width})")
        if not bool(mask.any()):
            raise ValueError("region mask selects no pixel; set at least one pixel or pass None")
        return mask
    try:
        top, left, rows, cols = (int(v) for v in region)
    except (TypeError, ValueError):
        raise ValueError(f"region {region!r} is neither None, a bool mask nor a rectangle "
                         "(top, left, height, width)") from None
    if rows < 1 or cols < 1:
        raise ValueError(f"region {region!r} is empty; height and width must be at least 1")
    if top < 0 or left < 0 or top + rows > height or left + cols > width:
        raise ValueError(f"region (top={top}, left={left}, height={rows}, width={cols}) leaves the "
                         f"{height}x{width} image; need 0 <= top, top + height <= {height}, "
                         f"0 <= left, left + width <= {width}")
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[top:top + rows, left:left + cols] = True
    return mask


def takes_class(spec: TaskSpec) -> bool:
    """Whether explaining `spec` needs a class index (one output channel per class)."""
    return spec.has_classes


def takes_region(spec: TaskSpec) -> bool:
    """Whether `spec` predicts a map, so that its score can be limited to a region."""
    return spec.per_pixel


def task_score(outputs: dict[str, Tensor], spec: TaskSpec, target_class: int | None = None,
               region: Region = None) -> Tensor:
    """The number explained for each image -> (B,).

    Args:
        outputs: model outputs {task: (B, C, H, W)} or (B, C) for classification.
        spec: the task to score.
        target_class: class index for kinds with classes (`takes_class`), else None.
        region: see `region_mask`; must be None for image-level tasks (`takes_region` False).

    Raises:
        ValueError: a class the task lacks, a class for a task without classes, a bad region.
    """
    picked = spec.explanation_score(outputs[spec.name], target_class)  # (B, H, W) or (B,)
    if not spec.per_pixel:
        if region is not None:
            raise ValueError(f"task {spec.name!r} ({spec.kind}) predicts one value per image; "
                             "pass region=None")
        return picked
    mask = region_mask(region, (picked.shape[-2], picked.shape[-1])).to(picked.device)
    return picked[:, mask].mean(1)


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode (BatchNorm uses and keeps its running statistics); mode restored."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def gradcam_layer(model: nn.Module) -> nn.Module:
    """The shared layer the model declares for LayerGradCam (`ProvidesExplainLayer`)."""
    layer = explain_layer(model)
    if layer is None:
        raise ValueError(f"{type(model).__name__} declares no layer for LayerGradCam "
                         "(explain_layer); use integrated_gradients or pass layer=")
    return layer


def integrated_gradients(forward: Callable[[Tensor], Tensor], model: nn.Module, image: Tensor,
                         n_steps: int, layer: nn.Module | None) -> Tensor:
    """Signed Integrated Gradients from a black baseline, summed over channels -> (1, H, W)."""
    attributions = IntegratedGradients(forward).attribute(image, baselines=torch.zeros_like(image),
                                                          n_steps=n_steps)
    return attributions.sum(1)


def layer_gradcam(forward: Callable[[Tensor], Tensor], model: nn.Module, image: Tensor,
                  n_steps: int, layer: nn.Module | None) -> Tensor:
    """Signed Grad-CAM at `layer` (default `gradcam_layer`), upsampled to the image -> (1, H, W)."""
    cam = LayerGradCam(forward, layer or gradcam_layer(model)).attribute(image)  # (1, 1, h, w)
    return LayerAttribution.interpolate(cam, tuple(image.shape[-2:]), interpolate_mode="bilinear")[:, 0]


METHODS: dict[str, Callable[..., Tensor]] = {
    "integrated_gradients": integrated_gradients,
    "layer_gradcam": layer_gradcam,
}


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters(), torch.empty(0)).device


def attribute(model: nn.Module, image: Tensor, spec: TaskSpec, method: str,
              target_class: int | None = None, region: Region = None, *,
              n_steps: int = DEFAULT_STEPS, layer: nn.Module | None = None) -> np.ndarray:
    """Attribution map of `task_score` for one image.

    Args:
        model: returns {task: prediction} for (B, 3, H, W) images; not modified.
        image: (1, 3, H, W) float.
        spec: the task to explain.
        method: a key of `METHODS`.
        target_class, region: what to explain, as in `task_score`.
        n_steps: Integrated Gradients steps (32 runs in well under a second at 64x64 on a CPU).
        layer: LayerGradCam layer; default `gradcam_layer(model)`.

    Returns:
        (H, W) float32 numpy map, positive where a pixel raises the score.

    Raises:
        ValueError: an unknown method, a bad image shape, class or region.
    """
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; accepted: {', '.join(METHODS)}")
    if image.dim() != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"image has shape {tuple(image.shape)}; expected (1, 3, H, W)")
    image = image.to(_device(model), torch.float32)

    def forward(images: Tensor) -> Tensor:
        return task_score(model(images), spec, target_class, region)

    with _evaluating(model), torch.no_grad():
        forward(image)  # checks the class and region before the costly part
    with _evaluating(model):
        attributions = METHODS[method](forward, model, image, n_steps, layer)
    return attributions[0].detach().cpu().numpy().astype(np.float32)


@torch.no_grad()
def score(model: nn.Module, image: Tensor, spec: TaskSpec, target_class: int | None = None,
          region: Region = None) -> float:
    """`task_score` of one (1, 3, H, W) image, as a float."""
    with _evaluating(model):
        return float(task_score(model(image.to(_device(model))), spec, target_class, region)[0])


def explain_pair(original: nn.Module, unlearned: nn.Module, image: Tensor, spec: TaskSpec,
                 method: str, target_class: int | None = None, region: Region = None, *,
                 n_steps: int = DEFAULT_STEPS) -> dict[str, np.ndarray | float]:
    """The same explanation for the model before and after unlearning.

    Args: as `attribute`, for both models.

    Returns:
        {"before": (H, W) map of `original`, "after": (H, W) map of `unlearned`,
         "score_before": float, "score_after": float}.
    """
    return {
        "before": attribute(original, image, spec, method, target_class, region, n_steps=n_steps),
        "after": attribute(unlearned, image, spec, method, target_class, region, n_steps=n_steps),
        "score_before": score(original, image, spec, target_class, region),
        "score_after": score(unlearned, image, spec, target_class, region),
    }
