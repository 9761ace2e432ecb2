"""The argument parser of the ``scvi-gen`` command (its functions live in :mod:`scvi_gen.cli`).

Every option has help text; defaults are shown by the formatter.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

Commands = Mapping[str, Callable[[argparse.Namespace], None]]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` except where there is none to show.

    Required options and ``None`` defaults say in their own help what happens without them.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.default in (None, "") or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def _add_device_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--accelerator",
        default="auto",
        help=f"{what}: Lightning accelerator, e.g. cpu, gpu, mps ('auto': a GPU when present)",
    )
    parser.add_argument(
        "--devices",
        default="auto",
        help=(
            "Lightning devices: a count (2), indices (0,1) or auto"
            if what == "training"
            else "one GPU index with --accelerator gpu, or auto"
        ),
    )


def _subparser(sub: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    return sub.add_parser(name, formatter_class=_HelpFormatter, **kwargs)


def _add_demo(sub: Any, names: list[str], commands: Commands) -> None:
    demo = _subparser(
        sub,
        "demo",
        help="train, generate and evaluate on real PBMCs; writes .h5ad, tables and a plot",
        description=(
            "The main job: train a generator on real cells (PBMC3K where present, else scanpy's "
            "pbmc68k_reduced), generate cells for every label, evaluate against a held-out split "
            "and write synthetic.h5ad, metrics.csv/.md and embedding.png. The report goes to "
            "stdout, progress to stderr: scvi-gen demo > report.md gives a clean report."
        ),
    )
    demo.add_argument("--out", default="scvi_gen_demo", help="output directory")
    demo.add_argument(
        "--dataset",
        default="auto",
        choices=["auto", "pbmc3k", "pbmc68k_reduced"],
        help="real cells to use ('auto': PBMC3K when present, else pbmc68k_reduced)",
    )
    demo.add_argument("--generator", default="scvi", choices=names, help="generator to train")
    demo.add_argument("--n-top-genes", type=int, default=2000, help="HVGs to model")
    demo.add_argument(
        "--max-epochs", type=int, default=None, help="epochs (default: the generator's own)"
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of split, training and sampling")
    demo.set_defaults(func=commands["demo"])


def _add_split(sub: Any, commands: Commands) -> None:
    split = _subparser(
        sub,
        "split",
        help="write stratified train/test (and validation) .h5ad files",
        description=(
            "Split an .h5ad file into the train.h5ad / test.h5ad (and validation.h5ad) that "
            "train and evaluate take, stratified by --labels-key with "
            "scvi_gen.datasets.train_test_split. Unlabelled cells go to train."
        ),
    )
    split.add_argument("--data", required=True, help="input .h5ad with raw counts")
    split.add_argument("--out-dir", default=".", help="directory for the split files")
    split.add_argument(
        "--prefix", default="", help="prefix of the file names, e.g. pbmc_ (default: none)"
    )
    split.add_argument(
        "--labels-key",
        default=None,
        help="obs column to stratify by (default: a plain random split)",
    )
    split.add_argument("--test-size", type=float, default=0.2, help="fraction of cells in test")
    split.add_argument(
        "--validation-size",
        type=float,
        default=0.0,
        help="fraction of all cells in validation.h5ad (0: no validation file)",
    )
    split.add_argument("--seed", type=int, default=0, help="seed of the shuffle")
    split.add_argument("--overwrite", action="store_true", help="replace existing split files")
    split.set_defaults(func=commands["split"])


def _add_train(sub: Any, names: list[str], commands: Commands) -> None:
    train = _subparser(sub, "train", help="train a generator on an .h5ad file and save it")
    train.add_argument("--data", required=True, help="input .h5ad with raw counts")
    train.add_argument("--generator", default="scvi", choices=names, help="generator to train")
    train.add_argument("--out", required=True, help="directory to save the model into")
    train.add_argument("--layer", default=None, help="layer with counts (default: .X)")
    train.add_argument(
        "--labels-key", default=None, help="obs column with cell labels (default: none)"
    )
    train.add_argument("--batch-key", default=None, help="obs column with batches (default: none)")
    train.add_argument(
        "--categorical-covariate-keys",
        nargs="*",
        default=None,
        help="further obs columns to condition on (default: none)",
    )
    train.add_argument(
        "--max-epochs", type=int, default=None, help="epochs (default: the generator's own)"
    )
    train.add_argument(
        "--model-kwargs",
        default=None,
        help="JSON object of model arguments, e.g. '{\"n_latent\": 16}'",
    )
    train.add_argument(
        "--train-kwargs",
        default=None,
        help="JSON object of train() arguments, e.g. '{\"lr\": 1e-3}'",
    )
    _add_device_options(train, "training")
    train.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    train.set_defaults(func=commands["train"])


def _add_generate(sub: Any, names: list[str], commands: Commands) -> None:
    gen = _subparser(sub, "generate", help="generate cells with a saved model")
    gen.add_argument("--model", required=True, help="directory of a saved model")
    gen.add_argument(
        "--generator",
        default=None,
        choices=names,
        help="the saved model's kind (default: read from the saved model)",
    )
    gen.add_argument("--out", required=True, help="output .h5ad")
    gen.add_argument(
        "--n-cells",
        type=int,
        default=None,
        help="cells to generate (needed unless --labels gives NAME=COUNT)",
    )
    gen.add_argument(
        "--labels",
        default=None,
        help="'B=500,NK=200' or one label name (default: training label frequencies)",
    )
    gen.add_argument(
        "--covariates", default=None, help='JSON, e.g. \'{"batch": "b1"}\' (default: none)'
    )
    gen.add_argument(
        "--guidance",
        default=None,
        help="a weight or a JSON object of weights (default: the model's own)",
    )
    gen.add_argument(
        "--batch-size", type=int, default=None, help="cells per chunk (default: the model's)"
    )
    gen.add_argument(
        "--seed", type=int, default=0, help="seed; the same seed gives the same cells"
    )
    _add_device_options(gen, "generation")
    gen.set_defaults(func=commands["generate"])


def _add_evaluate(sub: Any, commands: Commands) -> None:
    ev = _subparser(sub, "evaluate", help="score synthetic cells against real held-out cells")
    ev.add_argument("--train", required=True, help="real training .h5ad (counts)")
    ev.add_argument("--test", required=True, help="real test .h5ad (counts)")
    ev.add_argument("--synthetic", required=True, help="synthetic .h5ad")
    ev.add_argument(
        "--labels-key", default=None, help="obs column for per-label metrics (default: none)"
    )
    ev.add_argument("--layer", default=None, help="layer with counts (default: .X)")
    ev.add_argument("--n-hvg", type=int, default=2000, help="HVGs of the common space")
    ev.add_argument("--seed", type=int, default=0, help="seed of the metrics' subsampling")
    ev.add_argument("--out", default=None, help="CSV to write (default: print only)")
    ev.set_defaults(func=commands["evaluate"])


def _add_benchmark(sub: Any, names: list[str], commands: Commands) -> None:
    bench = _subparser(
        sub,
        "benchmark",
        help="train/generate/evaluate generators over splits and seeds; writes a report",
        description=(
            "The benchmark protocol: stratified train/test splits (or k-fold with Q3 top-up "
            "augmentation) per seed; each generator trains on the training cells only; "
            "distribution metrics against held-out cells with the real-vs-real floor; "
            "downstream classifiers with augmentation, an oversampling control and "
            "train-on-synthetic. Writes config.json, one CSV per finished cell (a rerun "
            "resumes), results.csv, summary.md and PNG plots. Options left out take the "
            "value of --config, else the protocol's default."
        ),
    )
    bench.add_argument("--config", default=None, help="config.json of a run to repeat/resume")
    bench.add_argument(
        "--dataset", default=None, help="pbmc3k (the default), pancreas, ... or an .h5ad path"
    )
    bench.add_argument(
        "--generators",
        default=None,
        help=f"comma list of {', '.join(names)} (default: the protocol's set)",
    )
    bench.add_argument(
        "--split", default=None, choices=["train-test", "kfold"], help="default: train-test"
    )
    bench.add_argument(
        "--seeds", default=None, help="a count N (seeds 0..N-1) or '0,5,7' (default: 3)"
    )
    bench.add_argument("--n-folds", type=int, default=None, help="folds of --split kfold")
    bench.add_argument("--labels-key", default=None, help="obs column of the cell labels")
    bench.add_argument("--test-size", type=float, default=None, help="test fraction")
    bench.add_argument("--n-top-genes", type=int, default=None, help="HVGs to model")
    bench.add_argument("--n-pcs", type=int, default=None, help="PCs of the common space")
    bench.add_argument(
        "--classifiers",
        default=None,
        help="comma list (random_forest,logistic_regression) or none",
    )
    bench.add_argument(
        "--settings",
        default=None,
        help='JSON per generator, e.g. \'{"ctgan": {"train": {"max_epochs": 50}}}\'',
    )
    bench.add_argument(
        "--max-epochs", type=int, default=None, help="max_epochs of every generator"
    )
    bench.add_argument("--threads", type=int, default=None, help="torch threads")
    bench.add_argument(
        "--out", default=None, help="run directory (default: benchmark_results/DATASET_SPLIT)"
    )
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.add_argument("--no-plots", action="store_true", help="report without PNG plots")
    bench.set_defaults(func=commands["benchmark"])


def build_parser(commands: Commands) -> argparse.ArgumentParser:
    """The argument parser of ``scvi-gen``; ``commands`` maps each subcommand to its function.

    Examples
    --------
    >>> from scvi_gen.cli import build_parser
    >>> build_parser().parse_args(["split", "--data", "cells.h5ad"]).test_size
    0.2
    """
    from scvi_gen.model._registry import GENERATORS

    names = sorted(GENERATORS)
    parser = argparse.ArgumentParser(
        prog="scvi-gen",
        description="Train single-cell generators, generate synthetic cells and evaluate them.",
        formatter_class=_HelpFormatter,
        epilog=(
            "Results go to stdout, progress bars and messages to stderr. Typical run: "
            "scvi-gen split --data cells.h5ad --labels-key cell_type; scvi-gen train --data "
            "train.h5ad --labels-key cell_type --out model; scvi-gen generate --model model "
            "--out synthetic.h5ad; scvi-gen evaluate --train train.h5ad --test test.h5ad "
            "--synthetic synthetic.h5ad --labels-key cell_type."
        ),
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="show more: -v progress messages, Lightning's banners and error tracebacks; "
        "-vv also hints and deprecation warnings; -vvv debug",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=0,
        help="show less: results and errors only, no progress bars",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(sub, names, commands)
    _add_split(sub, commands)
    _add_train(sub, names, commands)
    _add_generate(sub, names, commands)
    _add_evaluate(sub, commands)
    _add_benchmark(sub, names, commands)
    return parser
