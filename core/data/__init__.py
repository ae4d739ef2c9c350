"""Multi-task datasets in the MTAN/LibMTL .npy layout, and the embedded synthetic benchmarks."""

from core.data.npy import DatasetError, MTLDataset, split_calibration_test
from core.data.splits import VAL_PARTS, HeldOutError, RestrictedSplit, split_val

__all__ = ["BENCHMARKS", "VAL_PARTS", "DatasetError", "HeldOutError", "MTLDataset", "RestrictedSplit",
           "generate", "get_benchmark", "split_calibration_test", "split_val"]


def __getattr__(name: str):
    # The generator is imported on first use, so that `python -m core.data.synthetic` does not
    # find the module already imported (runpy would then warn and run a second copy).
    if name in ("BENCHMARKS", "generate", "get_benchmark"):
        from core.data import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
