from types import SimpleNamespace

import pytest
import torch

from core import plugins
from core.models import (
    ArchitectureError,
    MultiTaskWrapper,
    PluginError,
    build_model,
    describe_architecture,
    get_architecture,
    list_architectures,
    load_backbone_weights,
    load_plugins,
    read_state_dict,
    register_architecture,
    registry,
)
from core.models.heads import DenseHead
from core.tasks import TaskSpec

TASKS = [TaskSpec("depth", "depth", 1)]


def test_builtins_are_listed_and_duplicates_refused():
    assert {"small_cnn", "resnet18", "resnet34", "resnet50"} <= set(list_architectures())
    with pytest.raises(ArchitectureError, match="'small_cnn' is already registered"):
        register_architecture("small_cnn")(lambda tasks: None)


def test_a_registered_builder_builds_and_is_described(monkeypatch):
    def tiny(tasks, width: int = 2):
        from core.models.backbones import SmallCNN

        encoder = SmallCNN(width)
        return MultiTaskWrapper(encoder, {t.name: DenseHead(encoder.out_channels, t.channels, width)
                                          for t in tasks}, tasks)

    monkeypatch.setitem(registry._REGISTRY, "tiny", registry.Architecture("tiny", tiny, "my_pkg", "t"))
    model = build_model({"name": "tiny", "args": {"width": 3}}, TASKS)
    assert model.architecture == {"name": "tiny", "args": {"width": 3}, "plugin": "my_pkg"}
    assert describe_architecture(model.architecture) == "tiny (width=3) from plugin my_pkg"
    assert build_model({"name": "tiny"}, TASKS).architecture["args"] == {"width": 2}  # defaults kept


def test_entry_points_register_plugins(monkeypatch):
    loaded = []
    point = SimpleNamespace(name="mine", value="my_pkg.models", load=lambda: loaded.append(1))
    broken = SimpleNamespace(name="bad", value="bad_pkg", load=lambda: 1 / 0)
    monkeypatch.setattr(plugins, "entry_points",
                        lambda group: [point, broken] if group == "mtunlearn.architectures" else [])
    monkeypatch.setattr(plugins, "_loaded", set())
    monkeypatch.setattr(plugins, "_errors", {})
    list_architectures()
    assert loaded == [1]
    with pytest.raises(ArchitectureError, match="entry point bad failed .*ZeroDivisionError"):
        get_architecture("nope")


def test_a_missing_plugin_module_is_named():
    with pytest.raises(PluginError, match="plugin module 'no_such_module_xyz' cannot be imported"):
        load_plugins(["no_such_module_xyz"])


def test_state_dicts_are_read_without_unpickling(tmp_path):
    from safetensors.torch import save_file

    state = {"module.a": torch.ones(2), "module.b": torch.zeros(1)}
    save_file(state, str(tmp_path / "s.safetensors"))
    torch.save({"state_dict": state}, tmp_path / "s.pth")
    for name in ("s.safetensors", "s.pth"):
        assert set(read_state_dict(tmp_path / name, prefix="module.")) == {"a", "b"}
    torch.save({"a": SimpleNamespace(x=1)}, tmp_path / "object.pt")
    with pytest.raises(ArchitectureError, match="weights_only=True"):
        read_state_dict(tmp_path / "object.pt")
    (tmp_path / "s.ckpt").write_bytes(b"x")
    with pytest.raises(ArchitectureError, match="accepted: .safetensors, .pt, .pth, .bin"):
        read_state_dict(tmp_path / "s.ckpt")


def test_backbone_weights_load_into_the_encoder_from_a_torchvision_file(tmp_path):
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    torch.save(net.state_dict(), tmp_path / "resnet18.pth")
    model = build_model({"name": "resnet18", "args": {"head_width": 4}}, TASKS)
    skipped = load_backbone_weights(model, tmp_path / "resnet18.pth")["skipped"]
    assert skipped == ["fc.bias", "fc.weight"]
    assert torch.equal(model.encoder.layer4[1].conv2.weight, net.layer4[1].conv2.weight)
    small = build_model({"name": "small_cnn", "args": {"width": 2}}, TASKS)
    with pytest.raises(ArchitectureError, match="do not fit the encoder: missing"):
        load_backbone_weights(small, tmp_path / "resnet18.pth")


def test_the_entry_point_modules_are_read_once_per_process(monkeypatch):
    """The dashboard asks which plugin modules it may import on every rerun; reading every
    installed package's metadata each time cost tens of milliseconds, so it is read once."""
    reads = []

    def declared(group):
        reads.append(group)
        return [SimpleNamespace(name="mine", value="my_pkg.models", module="my_pkg")]

    monkeypatch.setattr(plugins, "entry_points", declared)
    plugins._declared_modules.cache_clear()
    try:
        assert plugins.entry_point_modules() == ["my_pkg"] == plugins.entry_point_modules()
        assert reads == list(plugins.GROUPS)
    finally:
        plugins._declared_modules.cache_clear()
