import pytest
import torch

from core.evaluation import at_risk_instances, cosine_matrix, cosine_matrix_by_layer, task_gradients


def test_angles_on_hand_made_vectors():
    x, y = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    frame = cosine_matrix({"a": x}, {"a": x, "b": y, "c": -3 * x}).set_index("retain_task")
    assert frame.loc["a", "angle_deg"] == pytest.approx(0.0, abs=1e-6)
    assert frame.loc["b", "angle_deg"] == pytest.approx(90.0)
    assert frame.loc["c", "angle_deg"] == pytest.approx(180.0)
    assert frame.loc["c", "cosine"] == pytest.approx(-1.0)
    assert list(frame["conflict"]) == [False, False, True]
    slanted = cosine_matrix({"a": torch.tensor([1.0, 1.0])}, {"b": x})
    assert slanted.loc[0, "angle_deg"] == pytest.approx(45.0)


def test_zero_gradient_is_nan_not_conflict():
    frame = cosine_matrix({"a": torch.zeros(3)}, {"b": torch.ones(3)})
    assert frame["cosine"].isna().all() and not frame.loc[0, "conflict"]


def test_per_layer():
    forget = {"a": {"l1.weight": torch.tensor([1.0, 0.0]), "l1.bias": torch.tensor([0.0]),
                    "l2.weight": torch.tensor([1.0])}}
    retain = {"b": {"l1.weight": torch.tensor([0.0, 1.0]), "l1.bias": torch.tensor([0.0]),
                    "l2.weight": torch.tensor([-1.0])}}
    frame = cosine_matrix_by_layer(forget, retain).set_index("layer")
    assert frame.loc["l1", "angle_deg"] == pytest.approx(90.0)
    assert frame.loc["l2", "angle_deg"] == pytest.approx(180.0) and frame.loc["l2", "conflict"]
    overall = cosine_matrix(forget, retain)  # dicts are flattened: [1,0,0,1] vs [0,1,0,-1]
    assert overall.loc[0, "angle_deg"] == pytest.approx(120.0)


def test_at_risk_instances():
    per_sample = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.1], [0.9, 0.1]])
    frame = at_risk_instances(per_sample, torch.tensor([1.0, 0.0]), [10, 11, 12, 13], k=2)
    aligned, opposed = frame[frame["side"] == "aligned"], frame[frame["side"] == "opposed"]
    assert list(aligned["id"]) == [10, 13] and list(opposed["id"]) == [12, 11]
    assert list(aligned["rank"]) == [1, 2] and opposed.iloc[0]["angle_deg"] > 170
    with pytest.raises(ValueError, match="ids"):
        at_risk_instances(per_sample, torch.ones(2), [1], k=1)


def test_task_gradients_match_autograd():
    from core.tasks import TaskSpec

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = model

        def forward(self, image):
            out = self.head(image)
            return {"a": out, "b": out[:, :1]}

    tasks = {"a": TaskSpec("a", "classification", 2), "b": TaskSpec("b", "depth", 1)}
    batch = {"image": torch.randn(4, 3), "a": torch.tensor([0, 1, 1, 0]),
             "b": torch.rand(4, 1) + 0.1}
    net = Net()
    grads = task_gradients(net, batch, tasks, names=["head.weight"])
    assert set(grads) == {"a", "b"} and list(grads["a"]) == ["head.weight"]
    loss = tasks["a"].loss(net(batch["image"])["a"], batch["a"])
    expected = torch.autograd.grad(loss, net.head.weight)[0]
    torch.testing.assert_close(grads["a"]["head.weight"], expected)


@pytest.mark.parametrize("partial", [False, True])
def test_analyze_conflicts(tiny_model, indoor_data, indoor_request, partial):
    from core.evaluation import analyze_conflicts
    from core.unlearning.subspaces import shared_names

    data = indoor_data
    names = list(data.train.tasks)
    request = indoor_request(3, partial)
    tiny_model.train()
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    report = analyze_conflicts(tiny_model, request, data, retain_sample=6, top_k=2)

    retain_labels = names + ([f"{t} (kept)" for t in request.kept_tasks] if partial else [])
    columns = ["forget_task", "retain_task", "cosine", "angle_deg", "conflict"]
    assert list(report.overall.columns) == columns
    assert list(report.overall["forget_task"].unique()) == list(request.tasks)
    assert list(report.overall["retain_task"].unique()) == retain_labels
    assert len(report.overall) == len(request.tasks) * len(retain_labels)
    assert report.overall["cosine"].between(-1, 1).all()
    assert list(report.by_layer.columns) == ["layer", *columns]
    layers = {n.rsplit(".", 1)[0] for n in shared_names(tiny_model)}
    assert set(report.by_layer["layer"]) == layers
    assert len(report.by_layer) == len(layers) * len(report.overall)
    assert list(report.at_risk.columns) == ["id", "cosine", "angle_deg", "side", "rank"]
    assert len(report.at_risk) == 4
    assert set(report.at_risk["id"]) <= set(request.retain_ids) & set(report.retain_ids)
    assert len(report.retain_ids) == 6
    # the model is read, never modified: same parameters, no .grad, mode restored
    assert tiny_model.training
    for name, p in tiny_model.named_parameters():
        assert torch.equal(p, before[name]) and p.grad is None
