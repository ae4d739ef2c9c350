import numpy as np
import pytest
import torch

from core.tasks import TaskSpec
from core.visual import (
    IGNORE_RGB,
    PALETTE,
    THUMBNAIL_SIZE,
    VIRIDIS,
    depth_rgb,
    image_rgb,
    instance_panels,
    normals_rgb,
    render_task,
    segmentation_rgb,
)

SEGMENTATION = TaskSpec("segmentation", "segmentation", 3)
DEPTH = TaskSpec("depth", "depth", 1)
NORMAL = TaskSpec("normal", "normal", 3)


def test_segmentation_colours_classes_and_blanks_ignored_pixels():
    rgb = segmentation_rgb(np.array([[0, 1], [-1, 2]]), 3)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert (rgb[0, 0] == PALETTE[0]).all() and (rgb[0, 1] == PALETTE[1]).all()
    assert tuple(rgb[1, 0]) == IGNORE_RGB and (rgb[1, 1] == PALETTE[2]).all()
    assert len({tuple(c) for c in PALETTE}) == len(PALETTE)


def test_segmentation_refuses_labels_outside_the_classes():
    with pytest.raises(ValueError, match=r"label 3 is outside the 3 classes.*0\.\.2"):
        segmentation_rgb(np.array([[0, 3]]), 3)


def test_depth_runs_through_viridis_and_blanks_invalid_pixels():
    rgb = depth_rgb(np.array([[1.0, 2.0], [3.0, 0.0]]))
    assert (rgb[0, 0] == VIRIDIS[0]).all() and (rgb[1, 0] == VIRIDIS[-1]).all()
    assert (rgb[0, 1] == VIRIDIS[4]).all()  # the middle of the range is the middle stop
    assert tuple(rgb[1, 1]) == IGNORE_RGB
    clipped = depth_rgb(np.array([[5.0, 0.5]]), vmin=1.0, vmax=2.0)
    assert (clipped[0, 0] == VIRIDIS[-1]).all() and (clipped[0, 1] == VIRIDIS[0]).all()


def test_normals_and_images_map_to_bytes():
    normals = np.zeros((3, 1, 3))
    normals[:, 0, 0] = (0, 0, 1)
    normals[:, 0, 1] = (-1, 0, 0)
    rgb = normals_rgb(normals)
    assert [tuple(c) for c in rgb[0]] == [(128, 128, 255), (0, 128, 128), IGNORE_RGB]
    image = np.array([0.0, 0.5, 1.2]).reshape(3, 1, 1)
    assert tuple(image_rgb(image)[0, 0]) == (0, 128, 255)


def test_render_task_draws_targets_and_predictions_alike():
    target = torch.tensor([[0, 2], [1, -1]])
    logits = torch.nn.functional.one_hot(target.clamp(min=0), 3).permute(2, 0, 1).float()
    assert (render_task(SEGMENTATION, logits)[0] == render_task(SEGMENTATION, target)[0]).all()
    depth, truth = torch.tensor([[[1.0, 4.0]]]), torch.tensor([[[1.0, 2.0]]])
    assert (render_task(DEPTH, depth, reference=truth)[0, 1] == VIRIDIS[-1]).all()  # clipped to truth's range
    assert (render_task(DEPTH, depth) == depth_rgb(depth[0])).all()
    normals = torch.nn.functional.normalize(torch.randn(3, 2, 2), dim=0)
    assert (render_task(NORMAL, normals) == normals_rgb(normals.numpy())).all()
    tile = render_task(TaskSpec("scene", "classification", 4), torch.tensor([0.1, 0.2, 3.0, 0.0]))
    assert tile.shape == (THUMBNAIL_SIZE, THUMBNAIL_SIZE, 3) and (tile == PALETTE[2]).all()


def test_instance_panels_show_input_then_truth_and_prediction_per_task():
    tasks = {"segmentation": SEGMENTATION, "depth": DEPTH}
    batch = {"image": torch.rand(2, 3, 4, 4), "segmentation": torch.zeros(2, 4, 4, dtype=torch.long),
             "depth": torch.rand(2, 1, 4, 4) + 0.1}
    outputs = {"segmentation": torch.randn(2, 3, 4, 4), "depth": torch.rand(2, 1, 4, 4)}
    panels = instance_panels(tasks, batch, {"prediction": outputs}, 1)
    assert [caption for caption, _ in panels] == ["input", "segmentation truth", "segmentation prediction",
                                                  "depth truth", "depth prediction"]
    assert all(picture.shape == (4, 4, 3) and picture.dtype == np.uint8 for _, picture in panels)
    assert (panels[0][1] == image_rgb(batch["image"][1])).all()
    two = instance_panels(tasks, batch, {"before": outputs, "after": outputs}, 0)
    assert [caption for caption, _ in two][3:4] == ["segmentation after"] and len(two) == 7


def test_image_rgb_scales_and_clips():
    image = torch.tensor([[[0.0, 1.0]], [[0.5, 2.0]], [[-1.0, 0.25]]])  # (3, 1, 2)
    rgb = image_rgb(image)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 2, 3)
    assert rgb[0, 0].tolist() == [0, 128, 0] and rgb[0, 1].tolist() == [255, 255, 64]
    with pytest.raises(ValueError, match=r"expected \(3, H, W\)"):
        image_rgb(np.zeros((4, 4, 3)))
