"""Multi-task datasets in the MTAN/LibMTL .npy layout, and the embedded synthetic benchmarks."""

from core.data.npy import DatasetError, MTLDataset, split_calibration_test
from core.data.synthetic import BENCHMARKS, generate, get_benchmark

__all__ = ["BENCHMARKS", "DatasetError", "MTLDataset", "generate", "get_benchmark",
           "split_calibration_test"]
