"""`mtu app`: the dashboard's settings come from its command line, not from the folder it is
started in; it listens on localhost unless told otherwise and names its plugins to both
processes."""

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

    def start(*argv):
        assert cli.main(["app", *argv]) == 0
        worker, streamlit = FakeProcess.started
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
    assert options["--server.address"] == "127.0.0.1" and options["--server.port"] == "8501"
    assert options["--server.headless"] == "true"
    assert worker.command[-1] == "worker" and streamlit.env["MTU_APP_PLUGINS"] == ""


def test_host_port_and_plugins_are_passed_on(started):
    worker, streamlit = started("--host", "0.0.0.0", "--port", "9000", "--plugin", "json", "--plugin", "csv")
    options = _options(streamlit.command)
    assert options["--server.address"] == "0.0.0.0" and options["--server.port"] == "9000"
    assert worker.command[-4:] == ["--plugin", "json", "--plugin", "csv"]
    assert streamlit.env["MTU_APP_PLUGINS"] == worker.env["MTU_APP_PLUGINS"] == "json,csv"
