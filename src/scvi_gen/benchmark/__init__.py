"""Benchmark protocol: runner, downstream classification, tables and report."""

from ._downstream import CLASSIFIERS, TRAIN_SETS, FeatureSet, downstream_scores, training_sets
from ._protocol import BenchmarkConfig, Replicate, iter_replicates, load_dataset, replicate_keys
from ._report import mean_sd_table, write_report
from ._runner import RESULT_COLUMNS, BenchmarkRun, collect_results, run_benchmark
from ._sweep import guidance_sweep
from ._tables import format_value, markdown_table
from ._timing import EpochTimer, peak_rss_mib, timed_train
from ._train_test import (
    FLOOR,
    TrainTestConfig,
    drop_unlabelled,
    floor_ratios,
    generator_settings,
    ratio_to_floor,
    run_train_test,
    split_for_seed,
    summarize,
    train_and_generate,
    train_generator,
)

__all__ = [
    "CLASSIFIERS",
    "FLOOR",
    "RESULT_COLUMNS",
    "TRAIN_SETS",
    "BenchmarkConfig",
    "BenchmarkRun",
    "EpochTimer",
    "FeatureSet",
    "Replicate",
    "TrainTestConfig",
    "collect_results",
    "downstream_scores",
    "drop_unlabelled",
    "floor_ratios",
    "format_value",
    "generator_settings",
    "guidance_sweep",
    "iter_replicates",
    "load_dataset",
    "markdown_table",
    "mean_sd_table",
    "peak_rss_mib",
    "ratio_to_floor",
    "replicate_keys",
    "run_benchmark",
    "run_train_test",
    "split_for_seed",
    "summarize",
    "timed_train",
    "train_and_generate",
    "train_generator",
    "training_sets",
    "write_report",
]
