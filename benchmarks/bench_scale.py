"""The unlearning engine at scale: each method family's cost per step against the floor, peak
memory, interference_aware's subspace memory and set-up, and whether the memory budget holds.

    python benchmarks/bench_scale.py [--quick] [--models small_cnn,resnet18,resnet50]
        [--sizes 64x64,128x128,288x384] [--threads 2] [--memory-budget-mb 4608] [--no-retrain]

The floor is one batched forward + backward of the same model on the same batch (every task's
loss, BatchNorm in eval mode, as during unlearning), measured once per (model, size) and round in
a subprocess of its own, before that configuration's methods: the median of `FLOOR_REPEATS`
passes after `FLOOR_WARMUP` warm-up passes (a floor read on the first, cold pass had made one
row's floor 3.6 times the next row's). Each configuration (model, size, method)
runs in a subprocess of its own, so its peak memory is its own: on CUDA torch's
max_memory_allocated, on CPU the growth of the process's peak resident set (ru_maxrss) over the
model and data it starts with. Data are random tensors of the NYUv2 layout (13-class
segmentation, depth, normals); timings do not depend on the values.

Methods, by family: grad_ascent (first order), interference_aware (per-sample gradients for IGO,
TGP bases), gpm and orthograd (projection), ssd (per-sample importances), scrub (teacher-student).
A "per_sample" row times the per-sample gradients of a retain batch alone. The
"interference_aware" and "ssd" rows report whether the whole run stayed within the memory
budget (which covers the run's model copies, optimiser state and gradients as well as its
chunked computations, docs/ARCHITECTURE.md section 8.5), the "per_sample" row whether the
per-sample gradients did. The default budget, 4608 MB, is the least round figure that ours takes
at ResNet-50 288x384 with batch 4 (it refuses 4096, naming 4227).
Batches shrink with the image (16 at 64x64 and 128x128, 4 at 288x384; --quick halves them and
takes fewer steps); interference_aware's subspace and calibration batches keep the defaults'
ratios to the retain batch (2x and 4x).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from core.device import describe_device, select_device
from core.requests import ForgetRequest
from core.tasks import TaskSpec
from core.unlearning import UnlearningData, get_unlearner

TASKS = [TaskSpec("segmentation", "segmentation", 13), TaskSpec("depth", "depth", 1),
         TaskSpec("normal", "normal", 3)]
MODELS = {"small_cnn": {"name": "small_cnn", "args": {"width": 16}},
          "resnet18": {"name": "resnet18", "args": {"output_stride": 8}},
          "resnet50": {"name": "resnet50", "args": {"output_stride": 8}}}
SIZES = {"64x64": (64, 64), "128x128": (128, 128), "288x384": (288, 384)}
METHODS = ["grad_ascent", "interference_aware", "per_sample", "gpm", "orthograd", "ssd", "scrub"]
FAMILY = {"grad_ascent": "first order", "interference_aware": "per-sample + TGP (ours)",
          "per_sample": "per-sample gradients", "gpm": "projection", "orthograd": "projection",
          "ssd": "importances", "scrub": "teacher-student"}
BUDGETED = {"interference_aware", "per_sample", "ssd"}


class RandomScenes:
    """An in-memory stand-in for a dataset: `.ids`, `.tasks`, `.batch(ids)`; each instance's
    tensors are drawn from a generator seeded by its id, so a batch is the same every time.
    `keep(ids)` draws those instances once, before anything is timed, so batches of them cost
    what a loaded dataset costs (drawing a 128x128 batch of 16 took about a third of
    small_cnn's floor at 64x64)."""

    def __init__(self, ids, size: tuple[int, int]):
        self.ids, self.size = list(ids), size
        self.tasks = {task.name: task for task in TASKS}
        self.kept: dict[int, dict[str, torch.Tensor]] = {}

    def keep(self, ids) -> None:
        self.kept.update({int(i): self.one(i) for i in ids})

    def one(self, i: int) -> dict[str, torch.Tensor]:
        if int(i) in self.kept:
            return self.kept[int(i)]
        g = torch.Generator().manual_seed(int(i))
        h, w = self.size
        labels = torch.randint(-1, 13, (h, w), generator=g)
        normal = torch.nn.functional.normalize(torch.randn(3, h, w, generator=g), dim=0)
        return {"image": torch.rand(3, h, w, generator=g), "segmentation": labels,
                "depth": torch.rand(1, h, w, generator=g) * 5, "normal": normal}

    def batch(self, ids) -> dict[str, torch.Tensor]:
        items = [self.one(i) for i in ids]
        return {"id": torch.tensor(list(ids)),
                **{key: torch.stack([item[key] for item in items]) for key in items[0]}}


def build(model_name: str) -> torch.nn.Module:
    """A model from the architecture registry, or (before it exists) the MultiTaskNet fallback."""
    spec = MODELS[model_name]
    try:
        from core.models import build_model
    except ImportError:
        from core.models import MultiTaskNet

        arch = {"backbone": spec["name"], **({"width": 16} if spec["name"] == "small_cnn" else {})}
        return MultiTaskNet(TASKS, arch)
    return build_model(spec, TASKS)


def rss_mb() -> float:
    """Peak resident set of this process so far, MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Peak:
    """Peak memory of a block over what was allocated at its start, MB."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated() / 2**20
        else:
            self.start = current_rss_mb()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.mb = torch.cuda.max_memory_allocated() / 2**20 - self.start
        else:
            self.mb = rss_mb() - self.start


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


FLOOR_WARMUP = 3
"""Passes run, untimed, before the floor is timed."""
FLOOR_REPEATS = 5
"""Timed passes of the floor; their median is the floor."""


def floor_seconds(model, batch, device, repeats: int = FLOOR_REPEATS, warmup: int = FLOOR_WARMUP) -> float:
    """Median of `repeats` batched forward + backward passes of every task's loss, after
    `warmup` untimed ones."""
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    times = []
    for index in range(warmup + repeats):
        sync(device)
        start = time.perf_counter()
        out = model(batch["image"])
        sum(task.loss(out[task.name], batch[task.name]) for task in TASKS).backward()
        sync(device)
        if index >= warmup:
            times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return statistics.median(times)


RETRAIN = {"epochs": 200, "images": 795, "batch": 8}
"""The recipe the retrain estimate assumes: LibMTL's NYUv2 training (795 training images,
200 epochs, batch 8, Adam)."""


def train_step_seconds(model, train: RandomScenes, batch_size: int, device, repeats: int = 3
                       ) -> float:
    """Median of `repeats` training steps (train mode, every task's loss, Adam) after one
    warm-up step."""
    model = model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = {k: v.to(device) for k, v in train.batch(train.ids[:batch_size]).items()}
    times = []
    for _ in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        out = model(batch["image"])
        sum(task.loss(out[task.name], batch[task.name]) for task in TASKS).backward()
        optimizer.step()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def retrain_ratio(rows: list[dict], steps: int) -> str | None:
    """The unlearn-vs-retrain wall-time line for ResNet-18 at 128x128, from the
    interference_aware and retrain rows of that configuration (None without them)."""
    def find(method):
        return next((r for r in rows if r["model"] == "resnet18" and r["size"] == "128x128"
                     and r["method"] == method and "error" not in r and not r.get("label")), None)
    ours, retrain = find("interference_aware"), find("retrain")
    if ours is None or retrain is None:
        return None
    unlearn = ours["setup_s"] + steps * ours["step_s"]
    per_epoch = -(-RETRAIN["images"] // RETRAIN["batch"]) * retrain["train_step_s"]
    estimate = RETRAIN["epochs"] * per_epoch
    return (f"unlearn vs retrain, resnet18 at 128x128 on {ours['device']}: interference_aware "
            f"set-up {ours['setup_s']:.1f} s + {steps} steps x {ours['step_s']:.1f} s = "
            f"{unlearn:.0f} s (set-up and step measured, retain batch {ours['batch']}; {steps} "
            f"is the default's most steps); retrain ESTIMATED as {RETRAIN['epochs']} epochs x "
            f"{per_epoch:.0f} s (an epoch of {RETRAIN['images']} images at batch "
            f"{RETRAIN['batch']}, {retrain['train_step_s']:.2f} s a measured training step) = "
            f"{estimate / 3600:.1f} h; ratio {unlearn / estimate:.2e} ({estimate / unlearn:.0f}x "
            f"faster)")


def plan(quick: bool, size: str) -> dict:
    batch = 4 if size == "288x384" else 16
    if quick:
        batch = max(2, batch // 2)
    return {"batch": batch, "steps": 3 if quick else 4}


def method_config(method: str, batch: int, steps: int, budget: float) -> dict:
    """The benchmark's knobs for `method`, those its config class has (so that the engine of an
    older commit, `--code`, runs with the knobs it knows and its own defaults for the rest)."""
    common = {"steps": steps, "retain_batch": batch, "forget_batch": batch, "device": "auto",
              "lr": 1e-4}
    extra = {"interference_aware": {"subspace_batch": 2 * batch, "calibration_batch": 4 * batch,
                                    "signal_batch": max(1, batch // 2), "memory_budget_mb": budget},
             "gpm": {"subspace_batch": 2 * batch},
             "ssd": {"steps": 1, "memory_budget_mb": budget}}
    known = {spec.name for spec in dataclasses.fields(get_unlearner(method).config_class)}
    return {k: v for k, v in {**common, **extra.get(method, {})}.items() if k in known}


def calibration_part(ids: list[int]) -> list[int]:
    """The calibration part of a val split's ids (`core.data.splits`), all of them for an engine
    without that module (`--code` at an older commit)."""
    try:
        from core.data.splits import split_val
    except ImportError:
        return ids
    return split_val(ids)["calibration"]


def child(job: dict) -> dict:
    """One configuration, in this process: build, run, time, measure."""
    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    device = select_device("auto")
    model = build(job["model"]).eval()
    h, w = SIZES[job["size"]]
    batch_size, steps = job["batch"], job["steps"]
    n = max(8 * batch_size, 64)
    train = RandomScenes(range(n), (h, w))
    val = RandomScenes(range(10_000, 10_000 + 12 * max(4 * batch_size, 8)), (h, w))
    calibration = calibration_part(val.ids)
    train.keep(train.ids)
    val.keep(calibration)
    data = UnlearningData(train=train, val=val, calibration_ids=calibration)
    # full-task, or with "partial": forget the first task only (ours' TGP runs in partial mode)
    tasks = [TASKS[0].name] if job.get("partial") else None
    request = ForgetRequest.build(train.ids[:batch_size], tasks, train.ids, [t.name for t in TASKS])
    retain = {k: v.to(device) for k, v in train.batch(train.ids[batch_size:2 * batch_size]).items()}
    params = sum(p.numel() for p in model.parameters())
    out = {**job, "device": describe_device(device), "params_m": params / 1e6}
    method = job["method"]
    if method == "floor":
        out["floor_s"] = floor_seconds(model, retain, device)
        return out
    if method == "retrain":
        out["train_step_s"] = train_step_seconds(model, train, RETRAIN["batch"], device)
        return out
    if method == "per_sample":
        from core.unlearning.gradients import per_sample_grads
        from core.unlearning.subspaces import sample_task_losses

        model.to(device)
        times = []
        with Peak(device) as peak:
            for _ in range(2):
                sync(device)
                start = time.perf_counter()
                grads, _ = per_sample_grads(model, retain, sample_task_losses(train.tasks),
                                            has_aux=True, memory_budget_mb=job["budget"])
                sync(device)
                times.append(time.perf_counter() - start)
                del grads
        out.update(step_s=min(times), peak_mb=peak.mb)
    else:
        config = method_config(method, batch_size, steps, job["budget"])
        stamps = []
        with Peak(device) as peak:
            result = get_unlearner(method, config).run(
                model, request, data, progress=lambda event: stamps.append(time.perf_counter()))
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        step = statistics.median(gaps) if gaps else result.seconds
        out.update(step_s=step, peak_mb=peak.mb,
                   setup_s=max(result.seconds - (stamps[-1] - stamps[0]) - step, 0.0))
        extras = result.extras
        if "subspace_bytes" in extras:
            out["subspace_share"] = extras["subspace_bytes"] / (4 * params)
    return out


def run_child(job: dict, code: str | None = None) -> dict:
    """`child(job)` in a subprocess of its own; with `code`, importing the engine from that
    folder (a checkout of another commit) instead of this one."""
    env = {**os.environ, "OMP_NUM_THREADS": str(job["threads"])}
    if code:
        env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(code), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        return {**job, "error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def against_floor(row: dict, floor: float | None) -> dict:
    """The row with its (model, size)'s floor and its step and set-up in floors."""
    if floor is None or "error" in row or "step_s" not in row:
        return row
    row = {**row, "floor_s": floor, "step_floors": row["step_s"] / floor}
    if row.get("setup_s") is not None:
        row["setup_floors"] = row["setup_s"] / floor
    return row


def median_row(rounds: list[dict]) -> dict:
    """One row from several rounds of a configuration: the median of each measured figure."""
    good = [r for r in rounds if "error" not in r]
    if not good:
        return rounds[-1]
    merged = dict(good[0])
    for key, value in good[0].items():
        if isinstance(value, float):
            merged[key] = statistics.median(r[key] for r in good if r.get(key) is not None)
    merged["rounds"] = len(good)
    return merged


def fmt(value, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def table(rows: list[dict]) -> str:
    lines = ["| model | size | batch | method (family) | steps / s | step / floor | set-up / floor | "
             "peak MB | budget held | subspaces / model | floor s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['size']} | {r['batch']} | {r['method']} | "
                         f"error: {r['error'][:60]} | | | | | | |")
            continue
        if r["method"] == "retrain":
            continue
        held = ("yes" if r["peak_mb"] <= r["budget"] else "no") if r["method"] in BUDGETED else "-"
        label = f" [{r['label']}]" if r.get("label") else ""
        label += ", partial" if r.get("partial") else ""
        rate = 1 / r["step_s"] if r.get("step_s") else None
        lines.append(
            f"| {r['model']} ({r['params_m']:.1f} M) | {r['size']} | {r['batch']} | "
            f"{r['method']} ({FAMILY[r['method']]}){label} | {fmt(rate)} | "
            f"{fmt(r.get('step_floors'))} | "
            f"{fmt(r.get('setup_floors'), '.1f')} | {fmt(r['peak_mb'], '.0f')} | "
            f"{held} | {fmt(r.get('subspace_share'), '.1%')} | {fmt(r.get('floor_s'), '.3f')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-budget-mb", type=float, default=4608)
    parser.add_argument("--quick", action="store_true", help="smaller batches, fewer steps")
    parser.add_argument("--steps", type=int, help="steps per method run (default: by --quick)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of each configuration; the table shows their medians")
    parser.add_argument("--compare", metavar="DIR", help="also run each configuration on the "
                        "engine in DIR (a checkout of an older commit), alternating with this one "
                        "round by round, rows marked [before]")
    parser.add_argument("--no-retrain", action="store_true",
                        help="skip the unlearn-vs-retrain estimate (ResNet-18 at 128x128)")
    parser.add_argument("--partial", action="store_true",
                        help="requests forget the first task only (partial mode: ours runs TGP)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    torch.set_num_threads(args.threads)
    print(f"device: {describe_device(select_device('auto'))}, torch {torch.__version__}, "
          f"{args.threads} threads, budget {args.memory_budget_mb:.0f} MB"
          f"{', quick' if args.quick else ''}", flush=True)
    codes = [("before", args.compare), ("", None)] if args.compare else [("", None)]
    rows = []
    for model in args.models.split(","):
        for size in args.sizes.split(","):
            methods = args.methods.split(",")
            if model == "resnet18" and size == "128x128" and not args.no_retrain:
                methods.append("retrain")
            base = {"model": model, "size": size, "threads": args.threads,
                    "budget": args.memory_budget_mb, "partial": args.partial, **plan(args.quick, size)}
            floors = [run_child({**base, "method": "floor"}) for _ in range(args.rounds)]
            measured = [f["floor_s"] for f in floors if "floor_s" in f]
            floor = statistics.median(measured) if measured else None
            print(f"floor of {model} at {size}: " + (f"{floor:.3f} s (median of {len(measured)} "
                  f"rounds, each the median of {FLOOR_REPEATS} passes after {FLOOR_WARMUP} warm-up "
                  "passes)" if floor else f"not measured: {floors[-1].get('error')}"), flush=True)
            for method in methods:
                job = {**base, "method": method}
                if args.steps:
                    job["steps"] = args.steps
                rounds = {label: [] for label, _ in codes}
                for _ in range(args.rounds):
                    for label, code in codes:
                        rounds[label].append({**run_child(job, code), "label": label})
                for label, _ in codes:
                    rows.append(against_floor(median_row(rounds[label]), floor))
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    ratio = retrain_ratio(rows, 25)
    if ratio:
        print()
        print(ratio)


if __name__ == "__main__":
    main()
