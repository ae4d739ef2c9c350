"""The bad-input catalogue: one file per area (the unlearn CLI, outputs of every writing command,
the ledger, datasets and imports, plugins, the dashboard). Every entry ends in exit status 2 (or
a page error) and one line that names the bad value and what is accepted, with no traceback;
nothing is written and every input stays byte-identical."""

from __future__ import annotations

import pytest


@pytest.fixture()
def refused(capsys):
    """refused(command, code, *fragments): the run exited 2 with one line on stderr that starts
    with `mtu COMMAND: error:` and holds every fragment (case-insensitive); returns the line."""

    def check(command: str, code: int, *fragments: str) -> str:
        err = capsys.readouterr().err
        assert code == 2, f"exit {code}, stderr {err!r}"
        assert "Traceback" not in err and err.startswith(f"mtu {command}: error:"), err
        assert len(err.strip().splitlines()) == 1, err
        for fragment in fragments:
            assert fragment.lower() in err.lower(), f"{fragment!r} not in {err!r}"
        return err.strip()

    return check
