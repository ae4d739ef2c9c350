"""Per-sample gradients (torch.func) against a plain loop over samples, with and without aux."""

import torch

from core.unlearning.gradients import gradients, per_sample_grads
from core.unlearning.subspaces import sample_loss, sample_task_losses


def test_per_sample_grads_match_a_loop_and_aux_gives_the_task_losses(street_model, street_data):
    tasks = street_data.train.tasks
    batch = street_data.train.batch(street_data.train.ids[:3])
    params = dict(street_model.named_parameters())
    plain = per_sample_grads(street_model, batch, sample_loss(tasks))
    grads, losses = per_sample_grads(street_model, batch, sample_task_losses(tasks), has_aux=True)
    assert set(losses) == set(tasks) and all(v.shape == (3,) for v in losses.values())
    for i in range(3):
        one = {key: value[i:i + 1] for key, value in batch.items()}
        outputs = street_model(one["image"])
        parts = {t: spec.per_sample_loss(outputs[t], one[t]).sum() for t, spec in tasks.items()}
        loop = gradients(sum(parts.values()), params)
        for name in params:
            assert torch.allclose(plain[name][i], loop[name], atol=1e-5), name
            assert torch.equal(grads[name][i], plain[name][i]), name
        for task, value in parts.items():
            assert torch.allclose(losses[task][i], value.detach(), atol=1e-6), task
