"""`mtu app`: the dashboard's settings come from its command line, so they hold in any folder it
is started in, except those a person set in Streamlit's own way (a STREAMLIT_* environment
variable, a .streamlit/config.toml) and --host / --port, which win; it listens on localhost
unless told otherwise and names its plugins to both processes."""

import os
import subprocess

import pytest

from core import cli


class FakeProcess:
    started: list["FakeProcess"] = []

    def __init__(self, command, env=None, **kwargs):
        self.command, self.env = command, env
        FakeProcess.started.append(self)

    def wait(self, timeout=None):
        return 0

    def terminate(self):
        pass


@pytest.fixture()
def started(monkeypatch, tmp_path):
    FakeProcess.started = []
    monkeypatch.setattr(subprocess, "Popen", FakeProcess)
    monkeypatch.setattr("signal.signal", lambda *args: None)
    monkeypatch.chdir(tmp_path)  # no .streamlit/config.toml here
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # nor in ~/.streamlit
    for name in [n for n in os.environ if n.startswith("STREAMLIT_")]:
        monkeypatch.delenv(name)

    def start(*argv):
        assert cli.main(["app", *argv]) == 0
        worker, streamlit = FakeProcess.started[-2:]
        return worker, streamlit

    return start


def _options(command) -> dict[str, str]:
    flags = command[command.index("run") + 2:]
    return dict(zip(flags[::2], flags[1::2]))


def test_the_settings_are_on_the_command_line(started):
    worker, streamlit = started()
    options = _options(streamlit.command)
    assert options["--server.maxUploadSize"] == str(cli.STREAMLIT_OPTIONS["server.maxUploadSize"]) == "64"
    assert options["--browser.gatherUsageStats"] == "false"
    assert options["--server.address"] == "127.0.0.1"
    assert "--server.port" not in options  # Streamlit's own default (8501) or the person's setting
    assert options["--server.headless"] == "true"
    assert options["--runner.postScriptGC"] == "false"  # 0.3 s of CPU per page switch (issue 19, speed)
    assert worker.command[-1] == "worker" and streamlit.env["MTU_APP_PLUGINS"] == ""


def test_host_port_and_plugins_are_passed_on(started):
    worker, streamlit = started("--host", "0.0.0.0", "--port", "9000", "--plugin", "json", "--plugin", "csv")
    options = _options(streamlit.command)
    assert options["--server.address"] == "0.0.0.0" and options["--server.port"] == "9000"
    assert worker.command[-4:] == ["--plugin", "json", "--plugin", "csv"]
    assert streamlit.env["MTU_APP_PLUGINS"] == worker.env["MTU_APP_PLUGINS"] == "json,csv"


def test_streamlits_own_settings_are_honoured(started, monkeypatch, tmp_path):
    """Issue 19: `mtu app` passed --server.port 8501 whatever STREAMLIT_SERVER_PORT or a
    .streamlit/config.toml said. A setting made there is left to Streamlit; the upload cap,
    which the app checks again, stays on the command line."""
    monkeypatch.setenv("STREAMLIT_SERVER_PORT", "9123")
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "config.toml").write_text(
        '[server]\naddress = "0.0.0.0"\nmaxUploadSize = 500\n\n[theme]\nbase = "dark"\n')
    _, streamlit = started()
    options = _options(streamlit.command)
    assert "--server.port" not in options and streamlit.env["STREAMLIT_SERVER_PORT"] == "9123"
    assert "--server.address" not in options and "--theme.base" not in options
    assert options["--server.maxUploadSize"] == "64" and options["--browser.gatherUsageStats"] == "false"
    _, streamlit = started("--port", "9000", "--host", "127.0.0.1")  # given to mtu app: they win
    options = _options(streamlit.command)
    assert options["--server.port"] == "9000" and options["--server.address"] == "127.0.0.1"


def test_settings_in_the_home_folder_are_honoured(started, tmp_path):
    (tmp_path / "home" / ".streamlit").mkdir(parents=True)
    (tmp_path / "home" / ".streamlit" / "config.toml").write_text("[browser]\ngatherUsageStats = true\n")
    _, streamlit = started()
    options = _options(streamlit.command)
    assert "--browser.gatherUsageStats" not in options and options["--server.headless"] == "true"
