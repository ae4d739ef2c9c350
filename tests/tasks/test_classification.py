"""The classification kind: an image-level kind."""

import torch
import torch.nn.functional as F
from task_helpers import CLS


def test_classification_metrics_and_loss():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 0.0]])
    target = torch.tensor([0, 2, -1])
    out = CLS.per_image_metrics(logits, target)
    assert out["accuracy"][:2].tolist() == [1.0, 0.0] and out["accuracy"][2].isnan()
    expected = F.cross_entropy(logits, target, ignore_index=-1, reduction="none")
    torch.testing.assert_close(out["loss"], expected)
    acc = CLS.accumulator()
    acc.update(logits, target)
    assert acc.compute() == {"accuracy": 0.5}
