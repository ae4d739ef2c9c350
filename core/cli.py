"""The `mtu` command: train, import, unlearn, history, lineage, info, generate, bench, tune, app, worker.

Every subcommand takes `--plugin MODULE` (repeatable): modules that register the user's own
architectures, task kinds or unlearning methods (`core.plugins`) before the command runs."""

from __future__ import annotations

import argparse
import re
import sqlite3
import sys
import time
from pathlib import Path


def _parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"size must look like 64x64, got {text!r}") from error
    return height, width


def _benchmarks() -> list[str]:
    from core.data.synthetic import BENCHMARKS

    return list(BENCHMARKS)


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--benchmark", required=True,
                        help=f"{', '.join(_benchmarks())}, or a folder in the .npy layout")
    parser.add_argument("--data-seed", type=int, default=0, help="synthetic generator seed")
    parser.add_argument("--n-train", type=int, default=800)
    parser.add_argument("--n-val", type=int, default=600)
    parser.add_argument("--size", type=_parse_size, default=(64, 64), help="HxW, e.g. 64x64")


def _source(args):
    from core.data.sources import DataSource

    return DataSource.parse(args.benchmark, seed=args.data_seed, n_train=args.n_train,
                            n_val=args.n_val, size=args.size)


def _architecture(args) -> dict:
    """{"name": --arch, "args": the --arg KEY=VALUE pairs, values read as JSON when they parse}."""
    import json

    values = {}
    for key, value in _parse_overrides(args.arg, "--arg").items():
        try:
            values[key] = json.loads(value)
        except json.JSONDecodeError:
            values[key] = value
    return {"name": args.arch, "args": values}


def cmd_train(args) -> int:
    from core import distributed
    from core.checkpoints import save_checkpoint
    from core.outputs import check_checkpoint_output
    from core.training import TrainConfig, train_checkpoint

    main = distributed.is_main()  # under torchrun rank 0 alone checks, prints and writes
    refusal = None
    if main:
        try:
            check_checkpoint_output(args.out, [args.backbone_weights] if args.backbone_weights else [],
                                    args.overwrite)
        except Exception as error:  # raised below, on every rank when several share the run
            refusal = error
    distributed.agree(refusal)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         weight_decay=args.weight_decay, seed=args.seed, device=args.device)
    model, card = train_checkpoint(_source(args), _architecture(args), config, show_bar=main,
                                   backbone_weights=args.backbone_weights)
    distributed.barrier()  # every rank finished: the model is whole and may be written
    if not main:
        return 0
    weights = save_checkpoint(model, card, args.out, if_exists="overwrite" if args.overwrite else "beside")
    print(f"saved {weights} ({weights.stat().st_size / 1e6:.1f} MB) "
          f"after {card.training['seconds']:.0f} s of training")
    _note_beside(weights, args.out)
    print(format_metrics(card.metrics))
    return 0


def format_metrics(metrics: dict) -> str:
    """A plain table: one row per (split, task), its metrics side by side."""
    lines = []
    for split, tasks in metrics.items():
        if not isinstance(tasks, dict):  # an unlearned model's before/after rows
            for row in tasks:
                lines.append(f"{split:<12} " + "  ".join(f"{k}={v}" for k, v in row.items()))
            continue
        for task, values in tasks.items():
            cells = "  ".join(f"{name}={_cell(value)}" for name, value in values.items())
            lines.append(f"{split:<12} {task:<14} {cells}")
    return "\n".join(lines)


def _cell(value) -> str:
    """A number to 4 decimals; anything else as it is (a card's metrics are checked at read)."""
    return f"{value:.4f}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def _instances(text: str, train_ids) -> list[int]:
    """--instances "3,17,40-45" -> [3, 17, 40, ..., 45]. Single ids are kept as typed (so that a
    duplicate, negative or unknown id is named by the request's checks); ranges, and ids of more
    than 18 digits, go to `core.requests.parse_ids`, which refuses a range larger than the training
    set before expanding it and names an over-long id."""
    from core.requests import ID_FORMAT, parse_ids

    ids: list[int] = []
    known = set(train_ids)
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        if re.fullmatch(r"-?\d{1,18}", token):
            ids.append(int(token))
        elif re.fullmatch(r"\d+(\s*-\s*\d+)?", token):
            ids.extend(parse_ids(token, known))
        else:
            shown = token if len(token) <= 24 else token[:24] + "..."
            raise ValueError(f"--instances: {shown!r} is not an id or a range; write {ID_FORMAT}")
    return ids


def _parse_overrides(pairs: list[str], option: str = "--set") -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"{option} expects KEY=VALUE, got {pair!r}")
        overrides[key.strip().replace("-", "_")] = value.strip()
    return overrides


def cmd_unlearn(args) -> int:
    from core import distributed
    from core.checkpoints import checkpoint_paths, load_checkpoint
    from core.unlearning.runner import run_request, summarise

    model, card = load_checkpoint(args.model)
    overrides = {"device": args.device, **_parse_overrides(args.set)}
    tasks = args.tasks.split(",") if args.tasks else None
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = args.out or Path("unlearned") / f"{checkpoint_paths(args.model)[0].stem}-{args.method}-{stamp}"
    result, weights, summary = run_request(model, card, checkpoint_paths(args.model)[0],
                                           _instances(args.instances, card.train_ids), tasks,
                                           args.method, overrides, out,
                                           show_bar=True, data_root=args.data,
                                           overwrite=args.overwrite,
                                           ledger=_ledger(args) if distributed.is_main() else None,
                                           reason=args.reason)
    if not distributed.is_main():  # under torchrun rank 0 alone prints and writes
        return 0
    print(f"{args.method} ({result.request.mode}-task, {len(result.request.instances)} instances, "
          f"tasks {', '.join(result.request.tasks)}) took {result.seconds:.2f} s; saved {weights}")
    _note_beside(weights, out)
    print(summarise(summary))
    return 0


def _note_beside(weights: Path, out) -> None:
    """Say so when another run wrote `out` meanwhile and the result went beside it."""
    from core.checkpoints import checkpoint_paths

    if weights != checkpoint_paths(out)[0]:
        print(f"note: {checkpoint_paths(out)[0]} was written by another run meanwhile; this "
              f"result is saved beside it as {weights}")


def _ledger(args):
    from core.ledger import Ledger

    return Ledger(args.ledger)


def cmd_history(args) -> int:
    import json

    from core.ledger import ledger_csv, record_columns

    rows = _ledger(args).runs(model=args.model, method=args.method, status=args.status, since=args.since)
    if args.format == "json":
        print(json.dumps(rows, indent=1, default=str))
        return 0
    if args.format == "csv":
        sys.stdout.write(ledger_csv(rows))
        return 0
    table = record_columns(rows)
    if not table:
        print("no run recorded" + (" that matches" if any((args.model, args.method, args.status,
                                                            args.since)) else ""))
        return 0
    shown = ["run", "created", "status", "method", "mode", "instances", "tasks", "source", "reason",
             "model_path", "result_path"]
    widths = {c: max(len(c), *(len(str(r[c] or "")) for r in table)) for c in shown}
    print("  ".join(c.ljust(widths[c]) for c in shown))
    for row in table:
        print("  ".join(str(row[c] or "").ljust(widths[c]) for c in shown))
    return 0


def cmd_lineage(args) -> int:
    from core.checkpoints import check_weights, read_card

    card = read_card(args.checkpoint)
    check_weights(args.checkpoint, card)
    chain = _ledger(args).lineage(card.weights_sha256)
    if not chain:
        print(f"{args.checkpoint}: no recorded run produced this checkpoint (an original model, or "
              "one made before the ledger or with another ledger)")
        return 0
    print(f"original: {chain[0]['model_path']} ({chain[0]['model_sha256'][:12]})")
    for row in chain:
        reason = f" (reason: {row['reason']})" if row["reason"] else ""
        print(f"  run {row['run']} {row['created']}: {row['method']}, {row['mode']}-task, forget "
              f"{len(row['instances'])} instances {row['instances'][:10]} on {', '.join(row['tasks'])}"
              f"{reason} -> {row['result_path']} ({row['result_sha256'][:12]})")
    return 0


def cmd_import(args) -> int:
    from core.importing import import_checkpoint, oracle_approximation, parse_recipe

    renames = [tuple(pair.split("=", 1)) for pair in args.rename]
    bad = [pair for pair in args.rename if "=" not in pair]
    if bad:
        raise ValueError(f"--rename expects OLD=NEW, got {bad[0]!r}")
    weights_by_task = {}
    for task, value in _parse_overrides(args.loss_weight, "--loss-weight").items():
        try:
            weights_by_task[task] = float(value)
        except ValueError:
            raise ValueError(f"--loss-weight {task}={value!r}: the weight must be a number") from None
    recipe = parse_recipe(args.epochs, args.batch_size, args.lr, args.weight_decay, args.seed,
                          args.optimizer, weights_by_task or None, args.train_seconds)
    _, card, weights = import_checkpoint(args.state_dict, _architecture(args), args.data,
                                         args.train_ids, args.tasks.split(",") if args.tasks else None,
                                         args.strip_prefix, renames, args.out, args.device,
                                         overwrite=args.overwrite, recipe=recipe)
    print(f"imported {args.state_dict} as {card.architecture['name']} with tasks "
          f"{', '.join(t['name'] for t in card.tasks)}; {len(card.train_ids)} training ids; "
          f"saved {weights}")
    _note_beside(weights, args.out)
    note = oracle_approximation(card.training)
    print(f"retrain oracle: {note}" if note else "retrain oracle: exact (retrains with the recipe given)")
    print(format_metrics(card.metrics))
    return 0


def cmd_info(args) -> int:
    from core.checkpoints import check_weights, read_card
    from core.models import describe_architecture, get_architecture, list_architectures

    if args.methods:
        from core.unlearning import list_unlearners, method_class

        for name in list_unlearners():
            method = method_class(name)
            print(f"{name:<26} {method.summary}" + (f"  (plugin {method.plugin})" if method.plugin else ""))
        return 0
    if args.architectures or args.model is None:
        for name in list_architectures():
            entry = get_architecture(name)
            arguments = ", ".join(f"{k}={v!r}" for k, v in entry.arguments().items())
            print(f"{name:<12} {entry.summary}  [{arguments}]"
                  + (f"  (plugin {entry.plugin})" if entry.plugin else ""))
        return 0
    card = read_card(args.model)
    weights = check_weights(args.model, card)
    print(f"weights: {weights} ({weights.stat().st_size / 1e6:.1f} MB, SHA-256 matches the card)")
    print(f"benchmark: {card.benchmark}\narchitecture: {describe_architecture(card.architecture)}")
    print("tasks: " + ", ".join(f"{t['name']} ({t['kind']}, {t['channels']})" for t in card.tasks))
    print(f"training instances: {len(card.train_ids)}; created {card.created}")
    if card.request:  # an unlearned model: what was asked, and the ticket it was asked under
        request = card.request
        ids = [str(i) for i in request.get("instances", [])]
        shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
        reason = request.get("reason") or "none recorded"
        print(f"unlearned from {card.parent}: {request.get('method')}, {request.get('mode')}-task, forget "
              f"{len(ids)} instances ({shown}) on {', '.join(request.get('tasks', []))}; reason: {reason}")
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

    from core.evaluation.benchmark import FULL, QUICK, plan_with, run_plan, tune_plan

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fresh and args.storage:
        raise SystemExit("mtu bench: --fresh discards a folder that other invocations sharing --storage "
                         "may be writing into, and the studies in the storage stay; pass a new --out and "
                         "a new --storage instead")
    plan = plan_with(QUICK if args.quick else FULL, benchmarks=args.benchmarks, ratios=args.ratios,
                     seeds=args.seeds, methods=args.methods, trials=args.trials,
                     tune_variants=args.tune_variants or None)
    out = args.out or default_results_dir("bench-quick" if args.quick else "bench")
    print(f"results folder: {out}")
    if args.tune_only:
        from core.evaluation.benchmark import OURS

        untuned = [m for m in plan.methods if m not in plan.tuned_methods()]  # named, left untuned
        for method in untuned:
            print(f"{method} runs at {OURS}'s choice and gets no study of its own; to tune it, pass "
                  "--tune-variants (with a new --out: a folder keeps the plan it was started with)")
        table = tune_plan(plan, out, workers=args.workers, storage=args.storage)
        print("tuning studies on the tuning seed (best tuning UIS v2, lower is better):")
        print(table[["benchmark", "mode", "method", "trials", "draws", "best_uis", "still_improving", "floor",
                     "plateaued"]]
              .to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"wrote {out}/tuning.json")
        return 0
    frames = run_plan(plan, out, fresh=args.fresh, workers=args.workers, storage=args.storage)
    from core.evaluation.geometry import CONFLICT_THRESHOLD, benchmark_labels

    print(f"task geometry of the tuning seed's base models (low task conflict: peak |cos| < "
          f"{CONFLICT_THRESHOLD}):")
    print(benchmark_labels(frames["geometry"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    columns = ["benchmark", "mode", "ours_uis", "strongest_baseline", "baseline_uis", "reduction_pct",
               "reduction_low", "reduction_high", "better_than_baseline", "consistent_with_paper",
               "beyond_paper", "floor_uis"]
    print("headline (UIS v2):")
    headline = frames["headline"].reindex(columns=columns)
    print(headline.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {out}/summary.md, {out}/report.html and the CSVs")
    return 0


def cmd_worker(args) -> int:
    from core.jobs import run_worker

    run_worker(plugins=args.plugin)
    return 0


def default_results_dir(name: str) -> Path:
    """A results folder outside any work tree, so that a run resumes from a fresh checkout:
    $MTU_RESULTS_DIR/name when set, else name in the per-user cache folder (platformdirs)."""
    import os

    import platformdirs

    return Path(os.environ.get("MTU_RESULTS_DIR") or platformdirs.user_cache_dir("mtunlearn")) / name


def cmd_tune(args) -> int:
    import shlex

    import torch

    from core.evaluation.tuning import tune_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    command = "mtu " + " ".join(shlex.quote(a) for a in args.argv)
    if args.from_bench:
        from core.evaluation.tuning import tuned_from_bench

        if args.storage:
            raise SystemExit("mtu tune: --from-bench tunes nothing, so there are no studies to share in "
                             "--storage; pass one of them")

        if not args.out:
            raise SystemExit("mtu tune: --from-bench needs --out (e.g. sample_models/tuned.json)")
        document = tuned_from_bench(args.from_bench, args.out, args.benchmarks, command)
        print(f"wrote the bench's choices per mode for {', '.join(document)} to {args.out}")
        return 0
    if not args.model:
        raise SystemExit("mtu tune: pass --model CHECKPOINT (or --from-bench FOLDER --out FILE)")
    entry = tune_checkpoint(args.model, args.trials, args.out, args.methods, args.ratio, args.seed,
                            command=command, data_root=args.data, workers=args.workers,
                            storage=args.storage)
    pairs = sum(len(methods) for methods in entry["modes"].values())
    print(f"tuned {pairs} (mode, method) pairs with {args.trials} trials each in {entry['seconds']:.0f} s; "
          f"wrote {args.out or 'tuned.json beside the model'}")
    return 0


STREAMLIT_OPTIONS = {"server.headless": True, "server.runOnSave": False, "server.maxUploadSize": 64,
                     "browser.gatherUsageStats": False, "client.toolbarMode": "minimal",
                     "theme.base": "light", "theme.primaryColor": "#2563eb",
                     "theme.backgroundColor": "#ffffff", "theme.secondaryBackgroundColor": "#f3f4f6",
                     "theme.textColor": "#111827", "theme.font": "sans serif", "runner.postScriptGC": False}
"""The dashboard's Streamlit settings, on the command line `mtu app` starts it with, so that they
hold in whatever folder it starts (a .streamlit/config.toml applies only in its own folder),
unless a person set them in Streamlit's own way (`streamlit_settings`); the upload cap (MB) always,
since the app checks it again before it stores an upload. No full garbage collection after each
script run: with the models, data and figures in memory it took 0.3 s of CPU per page or view
switch, holding the interpreter while the page's last elements waited to be sent."""
ENFORCED_OPTIONS = ("server.maxUploadSize",)


def streamlit_settings(app: Path) -> set[str]:
    """The Streamlit options ("section.name") a person has set in Streamlit's own way: an
    environment variable (STREAMLIT_SERVER_PORT for server.port) or a config.toml in
    ~/.streamlit, in ./.streamlit or beside the app's main script `app`. A config.toml that is
    not TOML sets nothing here (Streamlit reports it when it starts)."""
    import os

    def variable(key: str) -> str:
        return "STREAMLIT_" + re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key.replace(".", "_")).upper()

    known = [*STREAMLIT_OPTIONS, "server.address", "server.port"]
    found = {key for key in known if variable(key) in os.environ}
    try:
        from tomllib import loads
    except ImportError:  # Python 3.10: only the environment variables are seen
        return found
    for folder in (Path.home(), Path.cwd(), app.parent):
        try:
            settings = loads((folder / ".streamlit" / "config.toml").read_text())
        except (OSError, ValueError):
            continue
        found |= {f"{section}.{name}" for section, values in settings.items() if isinstance(values, dict)
                  for name in values}
    return found


def cmd_app(args) -> int:
    """Streamlit and the worker that runs its jobs, started together and stopped together. Both
    may import only the plugin modules named here (MTU_APP_PLUGINS, `core.jobs.allowed_plugins`)."""
    import os
    import signal
    import subprocess

    from core.jobs import PLUGINS_VARIABLE

    app = Path(__file__).resolve().parent.parent / "app" / "main.py"
    plugins = [arg for module in args.plugin for arg in ("--plugin", module)]
    env = {**os.environ, PLUGINS_VARIABLE: ",".join(args.plugin)}
    own = streamlit_settings(app)
    options = {name: value for name, value in {**STREAMLIT_OPTIONS, "server.address": "127.0.0.1"}.items()
               if name in ENFORCED_OPTIONS or name not in own}
    options.update({name: value for name, value in (("server.address", args.host), ("server.port", args.port))
                    if value is not None})  # given to mtu app: they win
    flags = [arg for name, value in options.items()
             for arg in (f"--{name}", str(value).lower() if isinstance(value, bool) else str(value))]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops both
    worker = subprocess.Popen([sys.executable, "-m", "core.cli", "worker", *plugins], env=env)
    streamlit = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(app), *flags], env=env)
    try:
        return streamlit.wait()
    finally:
        for child in (streamlit, worker):
            child.terminate()
            child.wait(timeout=30)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtu", description="Multi-task machine unlearning")
    commands = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE first: it registers its own architectures, task kinds or "
                             "unlearning methods (repeatable)")
    common.add_argument("--ledger", default=None, metavar="FILE",
                        help="the ledger of runs (default: $MTU_HOME/ledger.sqlite or the per-user "
                             "data folder)")

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], **kwargs)

    def storage_argument(parser: argparse.ArgumentParser, sharers: str, split: str) -> None:
        parser.add_argument("--storage", default=None, metavar="URL",
                            help=f"an Optuna storage that several `{sharers}` invocations share, on one "
                                 "machine or several: a journal file on a shared folder (a path) or a "
                                 "database URL (sqlite:///..., postgresql://...); they split "
                                 f"{split}, and a killed one's work is redone")

    def architecture_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--arch", default="small_cnn",
                            help="registered architecture (mtu info --architectures lists them)")
        parser.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                            help="an argument of the architecture's builder, e.g. --arg width=16")

    train = command("train", help="train a multi-task model and save a checkpoint")
    _add_data_arguments(train)
    architecture_arguments(train)
    train.add_argument("--backbone-weights", default=None, metavar="FILE",
                       help="pretrained encoder weights, a local .safetensors or .pth file")
    train.add_argument("--epochs", type=int, default=60)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=2e-3)
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    train.add_argument("--out", required=True, help="checkpoint path without suffix")
    train.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    train.set_defaults(func=cmd_train)

    unlearn = command("unlearn", help="forget instances on some or all tasks")
    unlearn.add_argument("--model", required=True, help="checkpoint (NAME, NAME.safetensors or NAME.json)")
    unlearn.add_argument("--instances", required=True, help="ids and ranges, e.g. 3,17,40-45")
    unlearn.add_argument("--tasks", default="", help="comma-separated; default: all tasks (full-task)")
    unlearn.add_argument("--method", default="interference_aware")
    unlearn.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a config field of the method, e.g. --set steps=50")
    unlearn.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    unlearn.add_argument("--out", default=None, help="output checkpoint path without suffix")
    unlearn.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    unlearn.add_argument("--reason", default="", help="why, e.g. a ticket number; kept in the ledger")
    unlearn.add_argument("--data", default=None, metavar="ROOT",
                         help="dataset folder (.npy layout); default: the data the model card names")
    unlearn.set_defaults(func=cmd_unlearn)

    info = command("info", help="print a checkpoint's model card, or the architectures or methods")
    info.add_argument("model", nargs="?", default=None)
    info.add_argument("--architectures", action="store_true", help="list the registered architectures")
    info.add_argument("--methods", action="store_true", help="list the registered unlearning methods")
    info.set_defaults(func=cmd_info)

    history = command("history", help="list the recorded requests and runs")
    history.add_argument("--model", default=None, help="a checkpoint path or weights-hash prefix")
    history.add_argument("--method", default=None)
    history.add_argument("--status", default=None, help="queued, running, done, failed, interrupted")
    history.add_argument("--since", default=None, help="a date, e.g. 2026-11-30")
    history.add_argument("--format", default="table", choices=["table", "csv", "json"])
    history.set_defaults(func=cmd_history)

    lineage = command("lineage", help="the chain of requests from the original model to a checkpoint")
    lineage.add_argument("checkpoint")
    lineage.set_defaults(func=cmd_lineage)

    imp = command("import", help="turn a PyTorch state dict trained elsewhere into a checkpoint")
    imp.add_argument("state_dict", help=".safetensors, or .pt/.pth/.bin (read with weights_only=True)")
    architecture_arguments(imp)
    imp.add_argument("--data", required=True, metavar="ROOT", help="dataset folder in the .npy layout")
    imp.add_argument("--train-ids", default="all", help="'all' or a file of the training ids")
    imp.add_argument("--tasks", default="", help="comma-separated dataset tasks (default: all)")
    imp.add_argument("--strip-prefix", default="", help="removed from every key, e.g. module.")
    imp.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                     help="rename a key prefix, e.g. decoders.=heads. (repeatable)")
    imp.add_argument("--device", default="cpu", help="device for the evaluation")
    imp.add_argument("--out", required=True, help="output checkpoint path without suffix")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    recipe = imp.add_argument_group("training recipe", "how the model was trained, for the retrain "
                                    "oracle; without --epochs it is recorded as unknown and the oracle "
                                    "is approximate")
    recipe.add_argument("--epochs", type=int, default=None)
    recipe.add_argument("--batch-size", type=int, default=None)
    recipe.add_argument("--lr", type=float, default=None)
    recipe.add_argument("--weight-decay", type=float, default=None)
    recipe.add_argument("--seed", type=int, default=None, help="the training seed")
    recipe.add_argument("--optimizer", default=None, help="e.g. adam, sgd (the oracle trains with Adam)")
    recipe.add_argument("--loss-weight", action="append", default=[], metavar="TASK=W",
                        help="a task's loss weight (repeatable; the oracle weighs tasks equally)")
    recipe.add_argument("--train-seconds", type=float, default=None,
                        help="how long the training took: the oracle's time estimate")
    imp.set_defaults(func=cmd_import)

    generate = command("generate", help="write a synthetic benchmark to a folder")
    generate.add_argument("name", help=", ".join(_benchmarks()))
    generate.add_argument("out")
    generate.add_argument("--data-seed", type=int, default=0)
    generate.add_argument("--n-train", type=int, default=800)
    generate.add_argument("--n-val", type=int, default=600)
    generate.add_argument("--size", type=_parse_size, default=(64, 64))
    generate.set_defaults(func=cmd_generate)

    bench = command("bench", help="compare every method on the benchmark protocol")
    bench.add_argument("--quick", action="store_true",
                       help="one benchmark, ratio and seed, 2 trials per study: a smoke run (minutes)")
    bench.add_argument("--out", default=None,
                       help="results folder (default: bench[-quick] in $MTU_RESULTS_DIR, else in the "
                            "per-user cache folder)")
    bench.add_argument("--trials", type=int, default=None,
                       help="tuning trials per method and tuning request, the same for every method")
    bench.add_argument("--fresh", action="store_true", help="discard what the folder holds first")
    bench.add_argument("--tune-only", action="store_true",
                       help="only the tuning studies on the tuning seed (no reported cell): for a decision")
    bench.add_argument("--benchmarks", type=_csv(str), default=None, help="e.g. synthetic-indoor")
    bench.add_argument("--ratios", type=_csv(float), default=None, help="forget ratios, e.g. 0.01,0.1")
    bench.add_argument("--seeds", type=_csv(int), default=None, help="reported seeds, e.g. 1,2,3")
    bench.add_argument("--methods", type=_csv(str), default=None,
                       help="default: every method but the sanity tier")
    bench.add_argument("--tune-variants", action="store_true",
                       help="give the variants of ours studies of their own (default: they run at ours' "
                            "choice); for a decision between them with --tune-only")
    bench.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    bench.add_argument("--workers", type=int, default=1,
                       help="tuning studies and cells run in this many processes, sharing the threads")
    storage_argument(bench, "mtu bench --out SAME_FOLDER", "the studies and cells")
    bench.set_defaults(func=cmd_bench)

    worker = command("worker", help="run the dashboard's queued unlearning jobs (mtu app starts one)")
    worker.set_defaults(func=cmd_worker)

    tune = command("tune", help="tune every method for both modes of a model: the dashboard's starting "
                                "settings (scored on the tuning part of val)")
    tune.add_argument("--model", default=None, help="checkpoint (NAME, NAME.safetensors or NAME.json)")
    tune.add_argument("--from-bench", default=None, metavar="FOLDER",
                      help="tune nothing: write what a finished `mtu bench` run chose per mode, one entry "
                           "per benchmark (the sample models carry the benchmarks' names), to --out")
    tune.add_argument("--benchmarks", type=_csv(str), default=None,
                      help="with --from-bench: which benchmarks (default: every one in the folder)")
    tune.add_argument("--trials", type=int, default=4, help="trials per method and mode, the same for all")
    tune.add_argument("--out", default=None,
                      help="JSON file (default: tuned.json beside the model); other models' entries are kept")
    tune.add_argument("--methods", type=_csv(str), default=None, help="default: every method but retrain")
    tune.add_argument("--ratio", type=float, default=0.01, help="forget set size, as a share of training")
    tune.add_argument("--seed", type=int, default=0, help="the tuning seed (forget set, sampler, runs)")
    tune.add_argument("--data", default=None, metavar="ROOT",
                      help="dataset folder (.npy layout); default: the data the model card names")
    tune.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    tune.add_argument("--workers", type=int, default=1, help="studies run in this many processes")
    storage_argument(tune, "mtu tune --model SAME --out SAME_FILE", "the studies")
    tune.set_defaults(func=cmd_tune)

    app = command("app", help="start the Streamlit dashboard and its worker")
    app.add_argument("--port", type=int, default=None,
                     help="the port to listen on (default: Streamlit's setting, STREAMLIT_SERVER_PORT or "
                          ".streamlit/config.toml, else 8501)")
    app.add_argument("--host", default=None,
                     help="the address to listen on (default: Streamlit's setting, else 127.0.0.1, this "
                          "machine only; 0.0.0.0: every interface)")
    app.set_defaults(func=cmd_app)
    return parser


DATA_PARALLEL = ("train", "unlearn")
"""The commands that run under torchrun, one share of the work per process (core.distributed)."""


def _shared_run(args) -> int:
    """Run a command as one of the ranks a launcher started: join the process group (nccl on
    CUDA, gloo on the CPU), run, leave. A SIGTERM (torchrun stops every rank when one fails)
    ends the command through its cleanup, so the ledger row of the run is closed."""
    import signal

    from core import distributed

    if args.command not in DATA_PARALLEL:
        raise ValueError(f"mtu {args.command} runs in one process; of the mtu commands only "
                         f"{' and '.join(DATA_PARALLEL)} run under torchrun (start it without the "
                         "launcher)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with distributed.session(args.device):
        args.where = distributed.describe()
        return args.func(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.where = ""
    try:
        from core import distributed
        from core.plugins import load_plugins

        load_plugins(args.plugin)
        if distributed.launched():
            return _shared_run(args)
        return args.func(args)
    except ValueError as error:
        message = str(error)
    except OSError as error:  # a missing or unreadable file, a full or read-only disk
        message = _os_error(error)
    except RecursionError as error:  # last resort: an input nested too deeply
        message = f"{error}; an input (a JSON file, a plugin's structure) nests too deeply"
    except sqlite3.Error as error:  # last resort: the ledger's or the queue's database failed
        message = f"database error ({type(error).__name__}): {error}"
    except RuntimeError as error:  # under torchrun: another rank stopped (else a bug: re-raised)
        from core import distributed

        if not (args.where and distributed.lost_rank(error)):
            raise
        message = (f"another rank stopped, so this one cannot go on ({error}); the run failed "
                   "and nothing was written")
    one_line = "; ".join(line.strip() for line in message.splitlines() if line.strip())
    where = f" ({args.where})" if args.where else ""
    print(f"mtu {args.command}{where}: error: {one_line}", file=sys.stderr)
    return 2


def _os_error(error: OSError) -> str:
    """"PATH: strerror" (both paths of a failed rename); the error's text when it names none."""
    paths = " -> ".join(str(path) for path in (error.filename, error.filename2) if path is not None)
    reason = error.strerror or str(error)
    return f"{paths}: {reason}" if paths else reason


if __name__ == "__main__":
    sys.exit(main())
