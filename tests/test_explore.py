import numpy as np
import torch

from core.explore import instance_table, pca_2d, predict


def test_pca_on_hand_made_points():
    points = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.5], [0.0, -0.5]]) + 3
    assert np.allclose(pca_2d(points), [[1, 0], [-1, 0], [0, 0.5], [0, -0.5]])
    assert np.allclose(pca_2d(-points), -pca_2d(points))  # axes are signed, not flipped at random
    assert np.allclose(pca_2d(np.array([[2.0, 5.0, 1.0]])), 0)
    assert pca_2d(np.random.default_rng(0).normal(size=(7, 1))).shape == (7, 2)


def test_instance_table_scores_every_task_per_image(tiny_model, indoor_source):
    train = indoor_source.open("train")
    ids = train.ids[::-1]
    before = {name: p.clone() for name, p in tiny_model.state_dict().items()}
    table, projection = instance_table(tiny_model, train, ids, batch_size=5)
    assert list(table["id"]) == ids and np.allclose(table[["x", "y"]].to_numpy(), projection)
    for name, spec in train.tasks.items():
        assert {f"{name}:{spec.primary}", f"{name}:loss"} <= set(table.columns)
    batch = train.batch(ids[:3])
    with torch.no_grad():
        outputs = tiny_model(batch["image"])
    spec = train.tasks["depth"]
    expected = spec.per_image_metrics(outputs["depth"], batch["depth"])["loss"].double().numpy()
    assert np.allclose(table["depth:loss"].to_numpy()[:3], expected, atol=1e-6)
    again, _ = instance_table(tiny_model, train, ids)
    assert np.allclose(again.drop(columns="id"), table.drop(columns="id"), atol=1e-5, equal_nan=True)
    assert not tiny_model.training
    assert all(torch.equal(before[name], p) for name, p in tiny_model.state_dict().items())


def test_predict_returns_one_row_per_id(tiny_model, indoor_source):
    train = indoor_source.open("train")
    outputs = predict(tiny_model, train, train.ids[:3], batch_size=2)
    assert set(outputs) == set(train.tasks)
    assert outputs["segmentation"].shape[:2] == (3, train.tasks["segmentation"].channels)
    assert outputs["depth"].shape == (3, 1, *train.image_size)
    assert not outputs["normal"].requires_grad


def test_twin_maps_share_one_projection_and_measure_the_retain_damage(tiny_model, indoor_data):
    """Issue 21 part 2: every model's features on one projection (fitted on the original's), so
    a point moves only when the model's features of it moved; per-instance retain damage."""
    import copy

    import numpy as np
    import torch

    from core.explore import retain_damage, twin_map

    moved = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for parameter in moved.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    train_ids = indoor_data.train.ids
    test_set, test_ids = indoor_data.held_out("test")
    groups = {"forget": train_ids[:3], "retain": train_ids[3:9]}
    frame = twin_map({"original": tiny_model, "same": copy.deepcopy(tiny_model), "moved": moved},
                     indoor_data.train, groups, unseen=(test_set, test_ids[:5]))
    assert list(frame.columns[:5]) == ["model", "id", "group", "x", "y"]
    assert set(frame["group"]) == {"forget", "retain", "unseen"}
    assert len(frame) == 3 * (3 + 6 + 5)
    by = {m: g.reset_index(drop=True) for m, g in frame.groupby("model", sort=False)}
    # the same weights land on the same points; other weights move them
    assert np.allclose(by["original"][["x", "y"]], by["same"][["x", "y"]])
    assert not np.allclose(by["original"][["x", "y"]], by["moved"][["x", "y"]])
    # the projection is the original's own PCA: its points are centred
    assert np.allclose(by["original"][["x", "y"]].mean(), 0, atol=1e-9)
    damage = retain_damage(tiny_model, moved, indoor_data.train, groups["retain"])
    assert set(damage["id"]) == set(groups["retain"]) and len(damage) == 6
    assert {"segmentation:miou before", "segmentation:miou after", "segmentation:miou change"} <= set(damage)
    assert (damage["worst change"] == damage.filter(like=" change").drop(columns="worst change")
            .min(axis=1)).all()
    assert damage["worst change"].is_monotonic_increasing  # the most damaged first
    same = retain_damage(tiny_model, copy.deepcopy(tiny_model), indoor_data.train, groups["retain"])
    assert np.allclose(same["worst change"].fillna(0), 0)


def test_distance_to_unseen_by_hand():
    import pandas as pd
    import pytest

    from core.explore import distance_to_unseen

    frame = pd.DataFrame({"model": ["a"] * 4, "id": [1, 2, 3, 4],
                          "group": ["forget", "unseen", "unseen", "retain"],
                          "x": [3.0, -1.0, 1.0, 0.0], "y": [4.0, 0.0, 0.0, 2.0]})
    table = distance_to_unseen(frame).set_index("group")["distance to unseen"]
    assert table["forget"] == pytest.approx(5.0) and table["unseen"] == pytest.approx(1.0)
    assert table["retain"] == pytest.approx(2.0)
