"""Speed and memory of the unlearning engine on the indoor sample model, measured side by side.

    python benchmarks/bench_unlearning.py [--threads 2] [--skip-retrain]

Prints:
1. per-sample gradients of a batch of 32 (torch.func vmap over grad) against the floor, one
   ordinary batched forward+backward of the same batch, and against a per-sample Python loop;
2. interference_aware (default config) on 10 forget instances against the retrain oracle for the
   same request (the retrain is a full training run, minutes on 2 cores);
3. the memory of interference_aware's subspace bases against the model's parameter memory.
Targets (issue 3): ratio 1 <= 2x, faster than the loop; ratio 2 <= 2%; ratio 3 <= 25%.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from core import load_sample
from core.requests import ForgetRequest
from core.unlearning import UnlearningData, get_unlearner
from core.unlearning.gradients import per_sample_grads


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-retrain", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, card = load_sample("synthetic-indoor")
    data = UnlearningData.from_card(card)
    tasks = data.train.tasks
    batch = data.train.batch(card.train_ids[:32])

    def sample_loss(outputs, sample):
        return sum(task.per_sample_loss(outputs[name], sample[name])[0]
                   for name, task in tasks.items())

    def batched():
        model.zero_grad(set_to_none=True)
        outputs = model(batch["image"])
        sum(task.loss(outputs[name], batch[name]) for name, task in tasks.items()).backward()

    def vmapped():
        per_sample_grads(model, batch, sample_loss)

    def looped():
        for i in range(32):
            model.zero_grad(set_to_none=True)
            one = {k: v[i:i + 1] for k, v in batch.items()}
            sample_loss(model(one["image"]), one).backward()

    floor = median_time(batched, args.repeats)
    vmap_time = median_time(vmapped, args.repeats)
    loop_time = median_time(looped, max(1, args.repeats // 2))
    print(f"[1] per-sample gradients, batch 32, {args.threads} threads: batched fwd+bwd "
          f"{floor * 1000:.0f} ms, vmap(grad) {vmap_time * 1000:.0f} ms "
          f"({vmap_time / floor:.2f}x the floor), Python loop {loop_time * 1000:.0f} ms "
          f"({loop_time / vmap_time:.2f}x slower than vmap)")

    request = ForgetRequest.build(card.train_ids[:10], None, card.train_ids, list(model.tasks))
    method = get_unlearner("interference_aware", {"device": "cpu"})
    result = method.run(model, request, data)
    extras = result.extras
    print(f"[3] subspace bases: {extras['subspace_bytes'] / 1e6:.3f} MB for a model of "
          f"{extras['model_bytes'] / 1e6:.3f} MB ({extras['subspace_bytes'] / extras['model_bytes']:.1%})")
    print(f"[2] interference_aware, 10 instances, full-task: {result.seconds:.2f} s "
          f"({extras['steps_taken']} steps)")
    if not args.skip_retrain:
        oracle = get_unlearner("retrain", {"device": "cpu"}).run(model, request, data)
        print(f"[2] retrain oracle, same request: {oracle.seconds:.1f} s; interference_aware takes "
              f"{result.seconds / oracle.seconds:.2%} of it")


if __name__ == "__main__":
    main()
