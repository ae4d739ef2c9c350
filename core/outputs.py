"""One output policy for every command that writes (`mtu train`, `import`, `unlearn`, `tune`,
`bench`, `generate` and the dashboard's jobs).

- An output is never one of the command's inputs: refused before any work.
- An existing output is refused unless the caller passes `overwrite`; an output name that
  exists but is not a regular file (a folder, a FIFO) is refused even then.
- An output folder that cannot be written is refused before any work.
- Files are written to a temporary name in their folder, flushed, fsynced and renamed
  (`write_text_atomic`); a checkpoint writes its weights first and its card last
  (`core.checkpoints.save_checkpoint`).
- A settings document (`tuned.json`) is never written into a model card, nor a card into one
  (`check_settings_output`).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path


class OutputError(ValueError):
    """An output that would overwrite an input, an existing file, or a place that cannot be written."""


def _unwritable(folder: Path) -> Path | None:
    """The nearest existing folder at or above `folder` when it cannot be written, else None."""
    folder = Path(os.path.abspath(folder))
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        return folder
    return None if os.access(folder, os.W_OK) else folder


def _same(a: Path, b: Path) -> bool:
    """The same file: one path, or two names of one file (a link)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_folder_writable(folder: str | Path, what: str = "the output folder") -> None:
    """Refuse a folder that cannot be created or written, naming the blocking one."""
    blocked = _unwritable(Path(folder))
    if blocked is not None:
        reason = "is a file, not a folder" if blocked.exists() and not blocked.is_dir() \
            else "has no write permission"
        raise OutputError(f"{what} {folder} cannot be written ({blocked} {reason}); choose another place")


def check_outputs(outputs: Iterable[str | Path], inputs: Iterable[str | Path] = (),
                  overwrite: bool = False, option: str = "--out") -> None:
    """The policy for a set of files one output consists of (a checkpoint's weights and card, a
    JSON file): none is an input, none exists unless `overwrite`, each is a regular file when it
    exists, and their folder can be written."""
    outputs = [Path(path) for path in outputs]
    inputs = [Path(path) for path in inputs]
    for path in outputs:
        for source in inputs:
            if _same(path, source):
                raise OutputError(f"{option} {path} is an input of this command; inputs are never "
                                  f"modified: choose another {option}")
    for path in outputs:
        if path.exists() or path.is_symlink():
            if not path.is_file():
                raise OutputError(f"{option} {path} exists and is not a regular file; choose another "
                                  f"{option}")
            if not overwrite:
                raise OutputError(f"{path} already exists; choose another {option} or pass --overwrite")
    for folder in sorted({path.parent for path in outputs}):
        check_folder_writable(folder, f"the folder of {option}")


def check_checkpoint_output(out: str | Path, inputs: Iterable[str | Path] = (),
                            overwrite: bool = False, option: str = "--out") -> None:
    """`check_outputs` for the checkpoint NAME (NAME.safetensors and NAME.json)."""
    from core.checkpoints import checkpoint_paths

    check_outputs(checkpoint_paths(out), inputs, overwrite, option)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a unique temporary name in its folder, fsynced, then renamed
    over `path`; an interruption leaves the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


CARD_FIELDS = ("benchmark", "tasks", "architecture")


def check_settings_output(out: str | Path, inputs: Iterable[str | Path] = (),
                          option: str = "--out") -> dict:
    """The settings document (`tuned.json`: {model or benchmark name: entry}) at `out` that a
    tuning command merges its entries into: {} when there is none. Refused: an input of the
    command, a model card (a JSON file with a checkpoint beside it, or one that reads like a
    card), and any file that is not such a document."""
    from core.checkpoints import checkpoint_paths

    out = Path(out)
    check_outputs([out], inputs, overwrite=True, option=option)
    weights, card = checkpoint_paths(out)
    if out.suffix == ".json" and weights.exists():
        raise OutputError(f"{option} {out} is the model card of the checkpoint {weights}; tuned "
                          "settings go into their own file, e.g. tuned.json")
    if out.suffix == ".safetensors":
        raise OutputError(f"{option} {out} names a weights file; tuned settings go into a .json file, "
                          "e.g. tuned.json")
    if not out.exists():
        return {}
    try:
        document = json.loads(out.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise OutputError(f"{option} {out} exists and is not a tuned-settings JSON file ({error}); "
                          "choose another file") from None
    if isinstance(document, dict) and all(key in document for key in CARD_FIELDS):
        raise OutputError(f"{option} {out} is a model card; tuned settings go into their own file, "
                          "e.g. tuned.json")
    if not isinstance(document, dict) or not all(
            isinstance(entry, dict) and "modes" in entry for entry in document.values()):
        raise OutputError(f"{option} {out} exists and is not a tuned-settings file ({{name: {{\"modes\": "
                          "...}}}}); choose another file")
    return document
