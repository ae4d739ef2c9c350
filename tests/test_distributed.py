"""Data-parallel runs (core/distributed.py) on the CPU: two gloo processes against one.

The equivalence tests start two ranks with torch.multiprocessing.spawn once for the module (a
tiny model: small_cnn of width 4, twelve 32x32 training images, 2-3 steps) and run the same
requests, through `run_request`, in this process and in both ranks.

Tolerances, stated once:
- the unlearning methods run with SGD (momentum 0.9), which follows the gradient's scale, so a
  share of the batch missing from a gradient, or a gradient counted twice, shows: two ranks
  must give one process's weights within SGD_TOLERANCE = 1e-6 (measured: at most 3e-8; with
  the gradient sum switched off the gap was 7e-5 to 4e-2);
- the retrain oracle runs the card's recipe, which is Adam: Adam divides each coordinate by its
  own running scale, which turns float rounding in a near-zero gradient coordinate into a
  visible step (one process's own weights move by up to 1e-4 between 1 and 2 CPU threads), and
  hides a gradient's scale. So its first step's gradients must match within GRADIENT_TOLERANCE
  = 1e-5 of the largest gradient entry (in float64 the gap was 4e-14), and its weights after two
  epochs within ADAM_TOLERANCE = 5e-4 (measured: at most 9.3e-5, weights of size about 0.1).
The two ranks' weights are always identical to each other, bit for bit.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core import distributed

SGD_TOLERANCE = 1e-6
ADAM_TOLERANCE = 5e-4
GRADIENT_TOLERANCE = 1e-5
WORLD = 2
REPO = Path(__file__).resolve().parent.parent

STEPS = {"steps": 3, "retain_batch": 5, "forget_batch": 3, "device": "cpu", "lr": 1e-2,
         "optimizer": "sgd"}
CASES = {
    # IGO runs in full-task requests, TGP in partial ones (the defaults)
    "interference_aware-full": ("interference_aware", None, STEPS),
    "interference_aware-partial": ("interference_aware", ["depth"], STEPS),
    "gpm-full": ("gpm", None, STEPS),
    "gpm-partial": ("gpm", ["depth"], STEPS),
    "retrain-full": ("retrain", None, {"epochs": 2, "device": "cpu"}),
    "retrain-partial": ("retrain", ["depth"], {"epochs": 2, "device": "cpu"}),
}
FORGET = 3  # the first three training ids


def test_one_process_runs_no_collective_and_changes_nothing(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.launched() and not distributed.active()
    assert distributed.init("cpu") is False
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    batch = torch.ones(4, 2)
    assert distributed.mark(batch) is batch and distributed.rows_of(batch) is None
    assert distributed.all_reduce(batch) is batch and torch.equal(batch, torch.ones(4, 2))
    assert distributed.shard([5, 6, 7]) == [5, 6, 7]
    model = torch.nn.Linear(2, 3)
    with distributed.replicated(model):  # no hook at all
        assert not model._forward_hooks and not model._forward_pre_hooks
        assert not model.weight._backward_hooks
    assert torch.equal(distributed.forward_whole(model, batch), model(batch).detach())
    norm = torch.nn.Sequential(torch.nn.BatchNorm2d(2))
    with distributed.synced_batchnorm(norm, torch.device("cpu")):
        assert type(norm[0]) is torch.nn.BatchNorm2d
    distributed.agree(None)
    with pytest.raises(KeyError):
        distributed.agree(KeyError("the refusal itself"))


def test_ranks_leave_the_group_together_after_a_run_and_at_once_after_an_error(monkeypatch):
    """A rank that destroys its gloo group while rank 0 is still writing the checkpoint can
    abort ("terminate called without an active exception", seen once in CI): after a run that
    ended well every rank waits for the others, then leaves; after an error it leaves at once
    (the others are stopped by the launcher, or fail their own wait)."""
    calls: list[str] = []
    monkeypatch.setattr(distributed, "init", lambda device: True)
    monkeypatch.setattr(distributed, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(distributed, "shutdown", lambda: calls.append("shutdown"))
    with distributed.session("cpu"):
        calls.append("run")
    assert calls == ["run", "barrier", "shutdown"]
    calls.clear()
    with pytest.raises(KeyError), distributed.session("cpu"):
        calls.append("run")
        raise KeyError("the run failed")
    assert calls == ["run", "shutdown"]


@pytest.mark.parametrize("count", [0, 1, 2, 3, 7, 12])
def test_shares_cover_every_row_once_and_differ_by_at_most_one(count):
    for world in (1, 2, 3, 5):
        shares = [distributed.shard_rows(count, index, world) for index in range(world)]
        assert sum((list(range(count))[share] for share in shares), []) == list(range(count))
        sizes = [share.stop - share.start for share in shares]
        assert max(sizes) - min(sizes) <= 1


def test_a_launch_without_the_launchers_variables_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(distributed.DistributedError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT"):
        distributed.init("cpu")


def test_commands_that_run_in_one_process_refuse_the_launcher(monkeypatch, capsys):
    from core.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["info", "--architectures"]) == 2
    assert "only train and unlearn run under torchrun" in capsys.readouterr().err


def test_a_lost_rank_is_told_from_a_fault_of_this_rank():
    assert distributed.lost_rank(RuntimeError("[pair.cc:561] Connection closed by peer [127.0.0.1]:1"))
    assert not distributed.lost_rank(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not distributed.lost_rank(ValueError("Connection closed by peer"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _make_parent(folder: Path) -> Path:
    """A tiny trained checkpoint (one epoch, batch 5: the last batch of 2 is split 1 + 1)."""
    from core.checkpoints import save_checkpoint
    from core.data.sources import DataSource
    from core.training import TrainConfig, train_checkpoint

    source = DataSource(benchmark="synthetic-street", n_train=12, n_val=10, size=(32, 32))
    model, card = train_checkpoint(source, {"name": "small_cnn", "args": {"width": 4}},
                                   TrainConfig(epochs=1, batch_size=5, device="cpu"))
    parent = folder / "parent"
    save_checkpoint(model, card, parent)
    return parent


def _run_cases(parent: Path, outputs: Path) -> dict:
    """Every case through `run_request`, writing to `outputs` with a ledger there; per case the
    weights, the before/after rows, the weights path, and for the oracle the gradients of its
    first step and the training ids each rank read."""
    from core.checkpoints import load_checkpoint
    from core.data.npy import MTLDataset
    from core.ledger import Ledger
    from core.unlearning import retrain
    from core.unlearning.runner import run_request

    model, card = load_checkpoint(parent)
    ledger = Ledger(outputs / "ledger.sqlite")
    found = {}
    adam_step, batch, train = torch.optim.Adam.step, MTLDataset.batch, retrain.train
    for case, (method, tasks, overrides) in CASES.items():
        reads: list[int] = []
        first: dict[str, torch.Tensor] = {}

        def spy_step(optimizer, *args, first=first, **kwargs):
            if not first:
                first.update({f"{i}": p.grad.clone() for i, p in
                              enumerate(optimizer.param_groups[0]["params"]) if p.grad is not None})
            return adam_step(optimizer, *args, **kwargs)

        def spy_train(*args, reads=reads, **kwargs):  # the training ids read by the oracle
            def spy_batch(dataset, ids):
                ids = list(ids)
                reads.extend(ids)
                return batch(dataset, ids)

            MTLDataset.batch = spy_batch
            try:
                return train(*args, **kwargs)
            finally:
                MTLDataset.batch = batch

        torch.optim.Adam.step, retrain.train = spy_step, spy_train
        try:
            result, weights, summary = run_request(
                model, card, parent, card.train_ids[:FORGET], tasks, method, overrides,
                outputs / case, ledger=ledger)
        finally:
            torch.optim.Adam.step, retrain.train = adam_step, train
        found[case] = {"weights": result.model.state_dict(), "summary": summary,
                       "path": weights, "history": result.history, "first": first, "reads": reads}
    return found


def _rank(index: int, port: int, parent: Path, folder: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(index),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(index))
    torch.set_num_threads(1)
    with distributed.session("cpu"):
        assert distributed.world_size() == WORLD and distributed.rank() == index
        found = _run_cases(parent, folder)
    torch.save(found, folder / f"rank{index}.pt")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{"one": one process's results, "ranks": [each rank's results], "folder": the ranks'
    output folder, "parent": the parent's weights}."""
    from core.checkpoints import load_checkpoint

    cache = tmp_path_factory.mktemp("dist-cache")
    previous = os.environ.get("MTU_CACHE_DIR")
    os.environ["MTU_CACHE_DIR"] = str(cache)  # the spawned ranks inherit it
    try:
        parent = _make_parent(tmp_path_factory.mktemp("dist-parent"))
        one = _run_cases(parent, tmp_path_factory.mktemp("dist-one"))
        two = tmp_path_factory.mktemp("dist-two")
        torch.multiprocessing.spawn(_rank, args=(_free_port(), parent, two), nprocs=WORLD)
    finally:
        if previous is None:
            os.environ.pop("MTU_CACHE_DIR", None)
        else:
            os.environ["MTU_CACHE_DIR"] = previous
    ranks = [torch.load(two / f"rank{index}.pt", weights_only=False) for index in range(WORLD)]
    model, card = load_checkpoint(parent)
    return {"one": one, "ranks": ranks, "folder": two, "parent": model.state_dict(),
            "forget": card.train_ids[:FORGET]}


def _gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_give_the_weights_of_one_process(runs, case):
    one, shared = runs["one"][case], runs["ranks"][0][case]
    tolerance = ADAM_TOLERANCE if case.startswith("retrain") else SGD_TOLERANCE
    assert _gap(one["weights"], runs["parent"]) > 100 * tolerance, "the run hardly moved the weights"
    gap = _gap(one["weights"], shared["weights"])
    assert gap <= tolerance, f"{case}: two ranks differ from one process by {gap:.2e}"
    for index in range(1, WORLD):
        other = runs["ranks"][index][case]["weights"]
        assert all(torch.equal(value, other[key]) for key, value in shared["weights"].items()), \
            f"rank {index} holds other weights than rank 0"
    assert len(one["history"]) == len(shared["history"])
    # the before / after evaluation, each rank computing its share of the forwards
    assert [(r["task"], r["split"]) for r in one["summary"]] == \
        [(r["task"], r["split"]) for r in shared["summary"]]
    for row, other in zip(one["summary"], shared["summary"]):
        assert other["before"] == pytest.approx(row["before"], abs=1e-6)
        assert other["after"] == pytest.approx(row["after"], abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["retrain-full", "retrain-partial"])
def test_the_oracle_takes_the_gradient_of_one_process(runs, case):
    """DistributedDataParallel's average, with each rank's loss weighed by the whole batch's
    pair weights, is the one-process weighted mean: the first step's gradients match."""
    one, shared = runs["one"][case]["first"], runs["ranks"][0][case]["first"]
    assert one and one.keys() == shared.keys()
    scale = max(float(value.abs().max()) for value in one.values())
    gap = max(float((shared[key] - value).abs().max()) for key, value in one.items())
    assert gap <= GRADIENT_TOLERANCE * scale, f"{case}: gradients differ by {gap / scale:.1e} of the largest"


@pytest.mark.slow
def test_the_oracle_never_reads_a_forget_instance_and_each_rank_reads_its_share(runs):
    """Full mode: the forget instances are masked on every task, so no rank ever reads them;
    the ranks read disjoint shares of each batch, which together are one process's reads."""
    one = runs["one"]["retrain-full"]["reads"]
    reads = [runs["ranks"][index]["retrain-full"]["reads"] for index in range(WORLD)]
    forget = set(runs["forget"])
    assert one and not forget & set(one)
    for rank_reads in reads:
        assert rank_reads and not forget & set(rank_reads)
    assert sorted(sum(reads, [])) == sorted(one)


@pytest.mark.slow
def test_only_rank_0_writes_the_checkpoint_and_the_ledger_row(runs):
    from core.ledger import Ledger

    folder = runs["folder"]
    for case in CASES:
        assert runs["ranks"][0][case]["path"] is not None
        assert all(runs["ranks"][index][case]["path"] is None for index in range(1, WORLD))
    written = sorted(path.name for path in folder.iterdir()
                     if not path.name.startswith(("rank", "ledger.sqlite")))
    assert written == sorted(f"{case}{suffix}" for case in CASES for suffix in (".json", ".safetensors"))
    recorded = Ledger(folder / "ledger.sqlite").runs()
    assert len(recorded) == len(CASES) and {row["status"] for row in recorded} == {"done"}


def _torchrun(*args: str, path: Path | None = None) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 -m core.cli ARGS` from the repository root."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(path), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", str(WORLD), "-m", "core.cli", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


TRAIN = ["train", "--benchmark", "synthetic-street", "--n-train", "12", "--n-val", "10",
         "--size", "32x32", "--arg", "width=4", "--epochs", "1", "--batch-size", "5",
         "--device", "cpu"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from core.checkpoints import load_checkpoint

    return load_checkpoint(path)[0].state_dict()


@pytest.mark.slow
def test_torchrun_trains_and_unlearns_and_rank_0_alone_writes(tmp_path, use_cache, capsys):
    from core.checkpoints import read_card
    from core.cli import main
    from core.ledger import Ledger

    ledger = ["--ledger", str(tmp_path / "ledger.sqlite")]
    trained = _torchrun(*TRAIN, "--out", str(tmp_path / "model"), *ledger)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert trained.stdout.count("saved ") == 1  # rank 0 alone prints
    assert main([*TRAIN, "--out", str(tmp_path / "model-one")]) == 0
    gap = _gap(_weights(tmp_path / "model"), _weights(tmp_path / "model-one"))
    assert gap <= ADAM_TOLERANCE, f"mtu train: two ranks differ from one process by {gap:.2e}"

    ids = ",".join(str(i) for i in read_card(tmp_path / "model").train_ids[:FORGET])
    request = ["unlearn", "--model", str(tmp_path / "model"), "--instances", ids, "--device", "cpu",
               "--method", "gpm", "--set", "steps=2", "--set", "optimizer=sgd", "--set", "lr=0.01",
               "--set", "retain_batch=5"]
    forgot = _torchrun(*request, "--out", str(tmp_path / "forgot"), *ledger)
    assert forgot.returncode == 0, forgot.stderr[-3000:]
    assert forgot.stdout.count("saved ") == 1
    assert main([*request, "--out", str(tmp_path / "forgot-one"), "--ledger",
                 str(tmp_path / "other.sqlite")]) == 0
    gap = _gap(_weights(tmp_path / "forgot"), _weights(tmp_path / "forgot-one"))
    assert gap <= SGD_TOLERANCE, f"mtu unlearn: two ranks differ from one process by {gap:.2e}"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("forgot")) == \
        ["forgot-one.json", "forgot-one.safetensors", "forgot.json", "forgot.safetensors"]
    recorded = Ledger(tmp_path / "ledger.sqlite").runs()
    assert [row["status"] for row in recorded] == ["done"]


STOP_RANK_1 = """
import os
from core.unlearning import base

if os.environ.get("RANK") == "1":
    def stop(*args, **kwargs):
        os._exit(9)  # as if the process were killed at its first step

    base.Unlearner.check_finite = stop
"""


@pytest.mark.slow
def test_a_rank_that_dies_fails_the_run_and_nothing_is_written(tmp_path, use_cache):
    from core.checkpoints import read_card
    from core.cli import main
    from core.ledger import Ledger

    assert main([*TRAIN, "--out", str(tmp_path / "model")]) == 0
    (tmp_path / "stop_rank_1.py").write_text(STOP_RANK_1)
    ids = ",".join(str(i) for i in read_card(tmp_path / "model").train_ids[:FORGET])
    run = _torchrun("unlearn", "--plugin", "stop_rank_1", "--model", str(tmp_path / "model"),
                    "--instances", ids, "--device", "cpu", "--set", "steps=3",
                    "--out", str(tmp_path / "never"), "--ledger", str(tmp_path / "ledger.sqlite"),
                    path=tmp_path)
    assert run.returncode != 0
    assert not list(tmp_path.glob("never*")), "a checkpoint was written"
    assert "exitcode" in run.stderr and "9" in run.stderr, run.stderr[-3000:]
    assert all(row["status"] != "done" for row in Ledger(tmp_path / "ledger.sqlite").runs())
