"""Every registered method on one full-task and one partial-task request of a sample model:
wall time and the primary metric on the forget pairs and on test, before and after.

    python benchmarks/bench_methods.py [--model synthetic-indoor] [--instances 10] \
        [--partial-task depth] [--threads 2] [--skip retrain]
"""

from __future__ import annotations

import argparse

import torch

from core import load_sample
from core.requests import ForgetRequest
from core.unlearning import UnlearningData, get_unlearner, list_unlearners
from core.unlearning.runner import before_after


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="synthetic-indoor")
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--partial-task", default="depth")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, card = load_sample(args.model)
    data = UnlearningData.from_card(card)
    generator = torch.Generator().manual_seed(0)
    picks = torch.randperm(len(card.train_ids), generator=generator)[:args.instances].tolist()
    instances = [card.train_ids[i] for i in picks]
    requests = {"full": ForgetRequest.build(instances, None, card.train_ids, list(model.tasks)),
                "partial": ForgetRequest.build(instances, [args.partial_task], card.train_ids,
                                               list(model.tasks))}
    print(f"{args.model}: forget instances {instances}")
    header = f"{'mode':<8}{'method':<20}{'seconds':>9}  {'task':<21}{'forget before->after':>22}" \
             f"{'test before->after':>22}"
    print(header)
    for mode, request in requests.items():
        for name in list_unlearners():
            if name in args.skip:
                continue
            result = get_unlearner(name, {"device": "cpu"}).run(model, request, data)
            rows = before_after(model, result.model, request, data)
            by = {(r["task"], r["split"]): r for r in rows}
            for task in request.tasks:
                forget, test = by[(task, "forget")], by[(task, "test")]
                print(f"{mode:<8}{name:<20}{result.seconds:>9.2f}  {task:<21}"
                      f"{forget['before']:>10.3f} -> {forget['after']:.3f}"
                      f"{test['before']:>12.3f} -> {test['after']:.3f}")
            for task in request.kept_tasks:
                kept, test = by[(task, "kept")], by[(task, "test")]
                print(f"{mode:<8}{name:<20}{'':>9}  {task + ' (kept)':<21}"
                      f"{kept['before']:>10.3f} -> {kept['after']:.3f}"
                      f"{test['before']:>12.3f} -> {test['after']:.3f}")


if __name__ == "__main__":
    main()
