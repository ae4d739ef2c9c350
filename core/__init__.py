"""Multi-task machine unlearning engine.

    >>> from core import load_sample
    >>> model, card = load_sample("synthetic-indoor")
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy so that `import core` stays cheap and never pulls torch for a CLI --help.
    if name in ("load_checkpoint", "load_sample", "save_checkpoint", "ModelCard"):
        from core import checkpoints

        return getattr(checkpoints, name)
    raise AttributeError(f"module 'core' has no attribute {name!r}")
