"""Helpers of the bad-input catalogue (see conftest.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def digest(*paths: Path) -> dict[str, str | None]:
    """SHA-256 of each file below `paths` (files or folders): compare before and after."""
    out: dict[str, str | None] = {}
    for path in paths:
        files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [path]
        for file in files:
            file = Path(file)
            out[str(file)] = hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else None
    return out


def checkpoint_digest(name: Path) -> dict[str, str | None]:
    """`digest` of NAME.json and NAME.safetensors."""
    return digest(name.with_suffix(".json"), name.with_suffix(".safetensors"))
