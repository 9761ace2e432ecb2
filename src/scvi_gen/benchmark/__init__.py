"""Benchmark protocol: runner, tables and plots."""

from ._tables import format_value, markdown_table
from ._train_test import (
    FLOOR,
    TrainTestConfig,
    ratio_to_floor,
    run_train_test,
    summarize,
)

__all__ = [
    "FLOOR",
    "TrainTestConfig",
    "format_value",
    "markdown_table",
    "ratio_to_floor",
    "run_train_test",
    "summarize",
]
