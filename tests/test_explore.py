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
