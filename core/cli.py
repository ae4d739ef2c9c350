"""The `mtu` command: train, unlearn, info, generate, bench, app."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"size must look like 64x64, got {text!r}") from error
    return height, width


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--benchmark", required=True,
                        help="synthetic-indoor, synthetic-street, or a folder in the .npy layout")
    parser.add_argument("--data-seed", type=int, default=0, help="synthetic generator seed")
    parser.add_argument("--n-train", type=int, default=800)
    parser.add_argument("--n-val", type=int, default=600)
    parser.add_argument("--size", type=_parse_size, default=(64, 64), help="HxW, e.g. 64x64")


def _source(args):
    from core.data.sources import DataSource

    return DataSource.parse(args.benchmark, seed=args.data_seed, n_train=args.n_train,
                            n_val=args.n_val, size=args.size)


def cmd_train(args) -> int:
    from core.checkpoints import save_checkpoint
    from core.training import TrainConfig, train_checkpoint

    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         weight_decay=args.weight_decay, seed=args.seed, device=args.device)
    architecture = {"backbone": args.backbone, "width": args.width}
    model, card = train_checkpoint(_source(args), architecture, config, show_bar=True)
    weights = save_checkpoint(model, card, args.out)
    print(f"saved {weights} ({weights.stat().st_size / 1e6:.1f} MB) "
          f"after {card.training['seconds']:.0f} s of training")
    print(format_metrics(card.metrics))
    return 0


def format_metrics(metrics: dict) -> str:
    """A plain table: one row per (split, task), its metrics side by side."""
    lines = []
    for split, tasks in metrics.items():
        for task, values in tasks.items():
            cells = "  ".join(f"{name}={value:.4f}" for name, value in values.items())
            lines.append(f"{split:<12} {task:<14} {cells}")
    return "\n".join(lines)


def _parse_ids(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"instances must be comma-separated integers, got {text!r}") from error


def _parse_overrides(pairs: list[str]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        overrides[key.strip().replace("-", "_")] = value.strip()
    return overrides


def cmd_unlearn(args) -> int:
    from core.checkpoints import checkpoint_paths, load_checkpoint
    from core.unlearning.runner import run_request, summarise

    model, card = load_checkpoint(args.model)
    overrides = {**_parse_overrides(args.set), "device": args.device}
    tasks = args.tasks.split(",") if args.tasks else None
    out = args.out or Path("unlearned") / f"{checkpoint_paths(args.model)[0].stem}-{args.method}"
    result, weights, summary = run_request(model, card, checkpoint_paths(args.model)[0],
                                           args.instances, tasks, args.method, overrides, out,
                                           show_bar=True)
    print(f"{args.method} ({result.request.mode}-task, {len(result.request.instances)} instances, "
          f"tasks {', '.join(result.request.tasks)}) took {result.seconds:.2f} s; saved {weights}")
    print(summarise(summary))
    return 0


def cmd_info(args) -> int:
    from core.checkpoints import read_card

    card = read_card(args.model)
    print(f"benchmark: {card.benchmark}\narchitecture: {card.architecture}")
    print("tasks: " + ", ".join(f"{t['name']} ({t['kind']}, {t['channels']})" for t in card.tasks))
    print(f"training instances: {len(card.train_ids)}; created {card.created}")
    print(format_metrics(card.metrics))
    return 0


def cmd_generate(args) -> int:
    from core.data.synthetic import generate

    root = generate(args.name, args.out, seed=args.data_seed, n_train=args.n_train,
                    n_val=args.n_val, size=args.size)
    print(f"wrote {root}")
    return 0


def _csv(kind):
    def parse(text: str):
        try:
            return tuple(kind(part) for part in text.split(",") if part.strip())
        except ValueError as error:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind.__name__}s, got {text!r}") from error
    return parse


def cmd_bench(args) -> int:
    import torch

    from core.evaluation.benchmark import FULL, QUICK, plan_with, run_plan

    if args.threads:
        torch.set_num_threads(args.threads)
    plan = plan_with(QUICK if args.quick else FULL, benchmarks=args.benchmarks, ratios=args.ratios,
                     seeds=args.seeds, methods=args.methods)
    out = args.out or Path("results") / ("bench-quick" if args.quick else "bench")
    frames = run_plan(plan, out, fresh=args.fresh, workers=args.workers)
    print(frames["headline"].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {out}/summary.md, {out}/report.html and the CSVs")
    return 0


def cmd_app(args) -> int:
    import subprocess

    app = Path(__file__).resolve().parent.parent / "app" / "main.py"
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(args.port)]
    return subprocess.call(command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtu", description="Multi-task machine unlearning")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a multi-task model and save a checkpoint")
    _add_data_arguments(train)
    train.add_argument("--backbone", choices=["small_cnn", "resnet18"], default="small_cnn")
    train.add_argument("--width", type=int, default=16)
    train.add_argument("--epochs", type=int, default=60)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=2e-3)
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    train.add_argument("--out", required=True, help="checkpoint path without suffix")
    train.set_defaults(func=cmd_train)

    unlearn = commands.add_parser("unlearn", help="forget instances on some or all tasks")
    unlearn.add_argument("--model", required=True, help="checkpoint (NAME, NAME.safetensors or NAME.json)")
    unlearn.add_argument("--instances", required=True, type=_parse_ids, help="e.g. 3,17,42")
    unlearn.add_argument("--tasks", default="", help="comma-separated; default: all tasks (full-task)")
    unlearn.add_argument("--method", default="interference_aware")
    unlearn.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a config field of the method, e.g. --set steps=50")
    unlearn.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    unlearn.add_argument("--out", default=None, help="output checkpoint path without suffix")
    unlearn.set_defaults(func=cmd_unlearn)

    info = commands.add_parser("info", help="print a checkpoint's model card")
    info.add_argument("model")
    info.set_defaults(func=cmd_info)

    generate = commands.add_parser("generate", help="write a synthetic benchmark to a folder")
    generate.add_argument("name", help="synthetic-indoor or synthetic-street")
    generate.add_argument("out")
    generate.add_argument("--data-seed", type=int, default=0)
    generate.add_argument("--n-train", type=int, default=800)
    generate.add_argument("--n-val", type=int, default=600)
    generate.add_argument("--size", type=_parse_size, default=(64, 64))
    generate.set_defaults(func=cmd_generate)

    bench = commands.add_parser("bench", help="compare every method on the benchmark protocol")
    bench.add_argument("--quick", action="store_true", help="one ratio, one seed, small grid (minutes)")
    bench.add_argument("--out", default=None, help="results folder (default results/bench[-quick])")
    bench.add_argument("--fresh", action="store_true", help="discard what the folder holds first")
    bench.add_argument("--benchmarks", type=_csv(str), default=None, help="e.g. synthetic-indoor")
    bench.add_argument("--ratios", type=_csv(float), default=None, help="forget ratios, e.g. 0.01,0.1")
    bench.add_argument("--seeds", type=_csv(int), default=None, help="reported seeds, e.g. 1,2,3")
    bench.add_argument("--methods", type=_csv(str), default=None, help="default: every method")
    bench.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    bench.add_argument("--workers", type=int, default=1,
                       help="cells run in this many processes, sharing the threads (tuning stays serial)")
    bench.set_defaults(func=cmd_bench)

    app = commands.add_parser("app", help="start the Streamlit dashboard")
    app.add_argument("--port", type=int, default=8501)
    app.set_defaults(func=cmd_app)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"mtu {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
