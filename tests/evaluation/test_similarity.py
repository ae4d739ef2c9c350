"""Linear CKA and the layer-wise similarity of two models (core.evaluation.similarity)."""

import copy

import pytest
import torch

from core.evaluation.similarity import centered_gram, layer_similarity, linear_cka, similarity_layers


def _features(n=50, p=20, seed=0):
    return torch.randn(n, p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_cka_of_a_representation_with_itself_is_one():
    x = _features()
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x.float(), x.float()) == pytest.approx(1.0)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    x = _features()
    q, _ = torch.linalg.qr(_features(20, 20, seed=1))
    y = _features(p=30, seed=2)
    assert linear_cka(x @ q, x) == pytest.approx(1.0)
    assert linear_cka(3.5 * x, x) == pytest.approx(1.0)
    assert linear_cka(x @ q * 0.1, y) == pytest.approx(linear_cka(x, y))


def test_cka_of_independent_features_is_small():
    assert linear_cka(_features(n=500, p=10, seed=3), _features(n=500, p=10, seed=4)) < 0.05


def _gram_cka(x, y):
    """Kornblith et al.'s HSIC form on centered Gram matrices, written out once more."""
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l_ = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return ((k * l_).sum() / (k.norm() * l_.norm())).item()


def test_gram_and_feature_forms_agree_with_the_hsic_formula():
    """More features than instances uses the N x N Gram form, fewer the p x q feature form."""
    wide, narrow = _features(n=10, p=40, seed=5), _features(n=10, p=3, seed=6)
    mixed = torch.cat([wide[:, :3] + 0.5 * narrow, _features(n=10, p=2, seed=7)], dim=1)
    assert linear_cka(wide, mixed) == pytest.approx(_gram_cka(wide, mixed))
    assert linear_cka(narrow, mixed) == pytest.approx(_gram_cka(narrow, mixed))
    assert 0 < linear_cka(narrow, mixed) < 1
    images = wide.reshape(10, 4, 2, 5)  # (N, C, h, w) maps are flattened per instance
    assert linear_cka(images, wide) == pytest.approx(1.0)


def test_cka_needs_the_same_instances():
    with pytest.raises(ValueError, match="same instances"):
        linear_cka(_features(n=5), _features(n=6))


def test_a_model_compared_with_itself_is_one_in_every_layer(tiny_model, indoor_data, indoor_request):
    request = indoor_request(3, True)
    layers = similarity_layers(tiny_model)
    assert layers and {part for _, part in layers.values()} == {"shared", *tiny_model.tasks}
    frame = layer_similarity({"original": tiny_model, "unlearned": copy.deepcopy(tiny_model)},
                             [("unlearned", "original")], indoor_data, request, sample=6)
    assert list(frame.columns) == ["layer", "part", "pair", "split", "cka", "instances"]
    assert set(frame["split"]) == {"forget", "retain", "test"}
    assert set(frame["layer"]) == set(layers)
    assert frame["cka"].to_numpy() == pytest.approx(1.0)
    assert (frame["pair"] == "unlearned vs original").all()


def test_a_changed_head_shows_in_its_own_rows(tiny_model, indoor_data, indoor_request):
    request = indoor_request(3, True)
    changed = copy.deepcopy(tiny_model)
    task = list(tiny_model.tasks)[-1]
    with torch.no_grad():
        for parameter in changed.task_parameters(task):
            parameter.copy_(torch.randn_like(parameter))
    frame = layer_similarity({"original": tiny_model, "unlearned": changed}, [("unlearned", "original")],
                             indoor_data, request, sample=6)
    shared = frame[frame["part"] == "shared"]
    assert shared["cka"].to_numpy() == pytest.approx(1.0)
    assert frame[frame["part"] == task]["cka"].min() < 0.99


def test_the_gram_matrix_summed_over_feature_blocks_is_the_whole_one():
    maps = _features(n=6, p=40, seed=8).reshape(6, 5, 2, 4).float()
    whole = centered_gram(maps, chunk=1 << 16)
    assert torch.allclose(centered_gram(maps, chunk=3), whole)
    assert whole.dtype == torch.float64 and torch.allclose(whole.sum(0), torch.zeros(6, dtype=torch.float64))
