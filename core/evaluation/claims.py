"""Claims on the bench's pieces of work in a results folder that several processes and machines
share (`mtu bench --storage`): each base model, oracle, tuning study and cell is computed by the
one process that claims it.

A claim is a file `claims/<piece>.json`, created with O_CREAT | O_EXCL (one process wins), that
names its owner (host, pid) and the time. While the owner works it touches the file every
`HEARTBEAT_S` seconds; when it finishes it writes the finishing time into the file, which stays
as the record of who computed the piece; when its work raises, it deletes the file so another
process can try. A claim is stale, and may be taken over, when its owner is a process of this
host that no longer exists, or when the file has not been touched for `GRACE_S` seconds (a
killed process on another machine; the machines' clocks must agree to well within that), or
when it is finished yet its piece is asked for again (its output was deleted). Two
processes that take over the same stale claim at the same instant may both compute its piece:
the bench's pieces are deterministic and written through temporary files, so that costs time,
never a result.

`work` runs one piece when this process claims it; `share` runs every piece it can claim, then
waits for those others hold (the bench's phases, `mtu tune --storage`'s studies).

`locked` holds the lock on a shared file's folder for a read-modify-write of that file (the
bench's invocations.json and floor caches, `mtu tune`'s settings file), so processes that update
it at once lose none of each other's changes; the lock is an advisory one on the folder
(`core.checkpoints`' own, released when its process dies), so across machines the folder must
support file locks, as sqlite's does.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from core.checkpoints import folder_lock
from core.outputs import write_text_atomic

HEARTBEAT_S = 30.0
"""Seconds between two touches of a held claim."""
GRACE_S = 300.0
"""A claim untouched this long is a stopped process's."""
POLL_S = 5.0
"""Seconds between two looks at the pieces other processes hold (`share`)."""

Piece = tuple[str, Callable[[], bool], Callable[[], object]]
"""A piece of work: (its name in the claims folder, whether it is done, what computes it)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def owner() -> dict[str, object]:
    """This process: {"host", "pid"}."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def stale(path: Path) -> bool:
    """Whether the claim at `path` may be taken over: a finished one (the bench asks only for a
    piece whose output is missing), or one of a stopped process: of this host and no longer
    running, or silent (untouched) for `GRACE_S` seconds."""
    try:
        held = json.loads(path.read_text())
        touched = path.stat().st_mtime
    except FileNotFoundError:
        return False
    except (json.JSONDecodeError, UnicodeDecodeError):  # being written, or cut off by a kill
        return time.time() - path.stat().st_mtime > GRACE_S
    if "finished" in held:  # asked for again, so its output is gone: the piece is free
        return True
    if held.get("host") == socket.gethostname() and not _alive(int(held.get("pid", 0))):
        return True
    return time.time() - touched > GRACE_S


def _take(path: Path) -> bool:
    """Create the claim at `path` for this process; False when it exists."""
    try:
        handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(handle, "w") as file:
        json.dump({**owner(), "time": time.time()}, file)
    return True


@contextmanager
def claim(folder: str | Path, piece: str) -> Iterator[bool]:
    """Hold the claim on `piece` in `folder` while the block runs: yields True when this process
    holds it (taken now, or taken over from a stopped process), False when another live process
    does (the block should then leave the piece alone)."""
    path = Path(folder) / f"{piece}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = _take(path)
    if not mine and stale(path):
        try:
            os.replace(path, path.with_name(f".{path.name}.{os.getpid()}.stale"))  # one process wins
        except FileNotFoundError:
            pass
        else:
            path.with_name(f".{path.name}.{os.getpid()}.stale").unlink(missing_ok=True)
            mine = _take(path)
    if not mine:
        yield False
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            os.utime(path)

    heart = threading.Thread(target=beat, daemon=True)
    heart.start()
    try:
        yield True
    except BaseException:
        stop.set()
        heart.join()
        path.unlink(missing_ok=True)
        raise
    stop.set()
    heart.join()
    held = json.loads(path.read_text())
    write_text_atomic(path, json.dumps({**held, "finished": time.time()}))


def work(folder: str | Path, name: str, done: Callable[[], bool], run: Callable[[], object]) -> bool:
    """`run()` when the piece `name` is not `done()` and this process claims it in `folder`
    (done is asked again once claimed: another process may have finished it meanwhile).
    Returns whether this process ran it."""
    if done():
        return False
    with claim(folder, name) as mine:
        if mine and not done():
            run()
            return True
    return False


def share(folder: str | Path, pieces: Sequence[Piece]) -> None:
    """Every piece not done yet, each by the process that claims it (`work`); then wait
    (`POLL_S` at a time) for those other processes hold, taking over a stopped process's claims."""
    while True:
        left = [piece for piece in pieces if not piece[1]()]
        if not left:
            return
        if not [piece for piece in left if work(folder, *piece)]:
            time.sleep(POLL_S)


@contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold the lock on the folder of `path` (created when missing) while the block reads,
    changes and writes `path`; write it with `write_text_atomic`, so that readers that take no
    lock never see half a file. Not re-entrant: the block must not take it again."""
    folder = Path(path).parent
    folder.mkdir(parents=True, exist_ok=True)
    with folder_lock(folder):
        yield
