"""One version source: `core.__version__`, which pyproject.toml reads (setuptools dynamic attr)."""

import importlib.metadata
import re

import core


def test_installed_version_is_core_version():
    installed = importlib.metadata.version("mtunlearn")
    assert installed == core.__version__, (
        f"installed metadata says {installed}, core.__version__ says {core.__version__}: "
        "reinstall with `make install` (or pip install -e .)")


def test_version_is_a_release_number():
    assert re.fullmatch(r"\d+\.\d+\.\d+", core.__version__)
