import pytest
import torch

from core.models import build_model, explain_layer, has_features
from core.models.constant import ConstantModel
from core.tasks import TaskSpec

TASKS = [TaskSpec("segmentation", "segmentation", 5), TaskSpec("depth", "depth", 1),
         TaskSpec("normal", "normal", 3), TaskSpec("scene", "classification", 4)]
SMALL = {"name": "small_cnn", "args": {"width": 4}}


@pytest.mark.parametrize("architecture", [
    {"name": "small_cnn", "args": {"width": 8}},
    {"name": "resnet18", "args": {"output_stride": 16, "head_width": 8}},
    {"name": "resnet18", "args": {"output_stride": 8, "head": "aspp", "head_width": 8}},
])
def test_forward_returns_one_activated_prediction_per_task(architecture):
    model = build_model(architecture, TASKS).eval()
    x = torch.rand(2, 3, 32, 48)
    out = model(x)
    assert set(out) == {"segmentation", "depth", "normal", "scene"}
    assert out["segmentation"].shape == (2, 5, 32, 48)
    assert out["depth"].shape == (2, 1, 32, 48)
    assert out["scene"].shape == (2, 4)
    norms = out["normal"].norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)
    assert has_features(model) and explain_layer(model) is not None
    decoded = model.decode(model.features(x), x.shape[-2:])  # what explore uses: features + outputs
    assert all(torch.equal(decoded[t], out[t]) for t in out)
    assert model.architecture["name"] == architecture["name"]


@pytest.mark.parametrize("depth, channels", [(18, [64, 512]), (50, [256, 2048])])
@pytest.mark.parametrize("stride", [8, 16])
def test_resnet_trunks_are_dilated_to_their_output_stride(depth, channels, stride):
    from core.models.backbones import ResNetTrunk

    fine, coarse = ResNetTrunk(depth, stride).eval()(torch.rand(1, 3, 64, 64))
    assert fine.shape == (1, channels[0], 16, 16)
    assert coarse.shape == (1, channels[1], 64 // stride, 64 // stride)


def test_shared_and_task_parameters_partition_the_model():
    model = build_model(SMALL, TASKS)
    shared = {id(p) for p in model.shared_parameters()}
    heads = [{id(p) for p in model.task_parameters(t.name)} for t in TASKS]
    assert shared and all(heads)
    union = shared.union(*heads)
    assert union == {id(p) for p in model.parameters()}
    assert sum(len(h) for h in heads) + len(shared) == len(union)


def test_head_gradients_stay_in_their_task():
    model = build_model(SMALL, TASKS)
    out = model(torch.rand(2, 3, 16, 16))
    out["depth"].sum().backward()
    assert all(p.grad is None for p in model.task_parameters("segmentation"))
    assert any(p.grad is not None for p in model.task_parameters("depth"))
    assert any(p.grad is not None for p in model.shared_parameters())


@pytest.mark.parametrize("architecture, message", [
    ({"name": "vgg"}, "unknown architecture 'vgg'; registered: .*small_cnn"),
    ({"name": "small_cnn", "args": {"depth": 3}}, "does not take args .*accepted: width=16"),
    ({"name": "small_cnn", "args": {"width": -1}}, "width=-1 is not accepted"),
    ({"name": "small_cnn", "args": {"width": 10**7}}, "width=10000000 is not accepted"),
    ({"name": "resnet18", "args": {"output_stride": 4}}, "output_stride 4 is not accepted"),
    ({"name": "resnet18", "args": {"head": "fpn"}}, "head 'fpn' is not accepted; choose one of dense, aspp"),
    ({"name": 3}, "must have a string \"name\""),
    ({"name": "tiny_unet", "plugin": "my_models"}, "plugin module 'my_models', which is not loaded"),
])
def test_bad_architectures_are_named(architecture, message):
    with pytest.raises(ValueError, match=message):
        build_model(architecture, TASKS)


def test_legacy_backbone_form_builds_the_same_model():
    torch.manual_seed(0)
    legacy = build_model({"backbone": "small_cnn", "width": 4}, TASKS)
    torch.manual_seed(0)
    current = build_model(SMALL, TASKS)
    assert legacy.architecture == current.architecture == {
        "name": "small_cnn", "args": {"width": 4, "in_channels": 3}, "plugin": None}
    assert all(torch.equal(a, b) for a, b in zip(legacy.state_dict().values(),
                                                 current.state_dict().values()))


def test_unknown_task_is_named():
    with pytest.raises(KeyError, match="'colour'"):
        next(build_model(SMALL, TASKS).task_parameters("colour"))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnets_download_nothing(monkeypatch, name):
    import torch.hub

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    build_model({"name": name}, TASKS[:1])


def test_constant_model_predicts_majority_and_median(indoor_source, use_cache):
    train = indoor_source.open("train")
    model = ConstantModel.fit(train)
    out = model(torch.zeros(2, 3, 8, 8))
    seg = train.batch(train.ids)["segmentation"]
    majority = torch.bincount(seg[seg >= 0]).argmax()
    assert (out["segmentation"].argmax(1) == majority).all()
    depth = train.batch(train.ids)["depth"]
    assert torch.isclose(out["depth"][0, 0, 0, 0], depth[depth > 0].median())
