"""The ``scvi-gen`` command: demo, train, generate, evaluate, benchmark."""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)


def _parse_labels(text: str | None) -> dict[str, int] | str | None:
    """``"B=500,NK=200"`` -> ``{"B": 500, "NK": 200}``; a bare name stays a name."""
    if text is None:
        return None
    if "=" not in text:
        return text
    plan = {}
    for part in text.split(","):
        name, _, n = part.rpartition("=")
        if not name or not n.strip().isdigit():
            raise SystemExit(f"error: cannot read --labels entry {part!r}; use NAME=COUNT.")
        if name.strip() in plan:
            raise SystemExit(f"error: --labels names {name.strip()!r} twice; give it once.")
        plan[name.strip()] = int(n)
    return plan


def _parse_json(text: str | None, option: str) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(
            f"error: {option} must be JSON, e.g. '{{\"max_epochs\": 50}}' ({err})."
        ) from err
    if not isinstance(value, dict):
        raise SystemExit(f"error: {option} must be a JSON object.")
    return value


def _parse_guidance(text: str | None) -> float | dict | None:
    """A single weight (``"2"``) or per-attribute weights as JSON (``'{"cell_type": 2}'``)."""
    if text is None:
        return None
    if text.lstrip().startswith("{"):
        return _parse_json(text, "--guidance")
    try:
        return float(text)
    except ValueError as err:
        raise SystemExit(
            f"error: --guidance must be a number or a JSON object, got {text!r}."
        ) from err


def _read_h5ad(path: str):
    import anndata as ad

    if not Path(path).exists():
        raise SystemExit(f"error: file {path} does not exist.")
    try:
        return ad.read_h5ad(path)
    except OSError as err:
        # h5py's "file signature not found" names neither the file nor the expected format.
        raise ValueError(
            f"{path} is not a readable .h5ad file ({err}); pass an AnnData written with "
            "adata.write_h5ad."
        ) from err


def cmd_demo(args: argparse.Namespace) -> None:
    """Run :func:`scvi_gen.run_demo` and print the table."""
    from scvi_gen._demo import run_demo

    result = run_demo(
        args.out,
        dataset=args.dataset,
        generator=args.generator,
        n_top_genes=args.n_top_genes,
        max_epochs=args.max_epochs,
        seed=args.seed,
    )
    print(result.table_md.read_text())
    print(
        f"Wrote {result.synthetic_path}, {result.table_csv}, {result.table_md}, {result.plot_png}"
    )
    print("Seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))


def cmd_train(args: argparse.Namespace) -> None:
    """Set up, train and save a generator on an .h5ad file."""
    from scvi_gen.model._registry import get_generator

    if Path(args.out).exists() and not args.overwrite:
        raise SystemExit(
            f"error: {args.out} already exists; pass --overwrite or choose another --out."
        )
    adata = _read_h5ad(args.data)
    spec = get_generator(args.generator)
    model_cls = spec.model_class()
    # A missing column gets setup_anndata's clear error below.
    if args.labels_key in adata.obs and adata.obs[args.labels_key].isna().any():
        n = int(adata.obs[args.labels_key].isna().sum())
        logger.warning("Dropping %d cells without %s.", n, args.labels_key)
        adata = adata[adata.obs[args.labels_key].notna()].copy()
    model_cls.setup_anndata(
        adata,
        layer=args.layer,
        labels_key=args.labels_key,
        batch_key=args.batch_key,
        categorical_covariate_keys=args.categorical_covariate_keys,
        **spec.setup_kwargs,
    )
    model = model_cls(
        adata, **{**spec.init_kwargs, **(_parse_json(args.model_kwargs, "--model-kwargs") or {})}
    )
    train_kwargs = {
        **spec.train_kwargs,
        **(_parse_json(args.train_kwargs, "--train-kwargs") or {}),
    }
    if args.max_epochs is not None:
        train_kwargs["max_epochs"] = args.max_epochs
    model.train(**train_kwargs)
    model.save(args.out, overwrite=args.overwrite)
    print(f"Saved {args.generator} model to {args.out}")


def saved_model_class(model_dir: str | Path) -> type:
    """The registered model class a saved model was written by (read from its metadata).

    Only classes of the generator registry are considered: the name in the file selects one
    of them, it never imports anything.
    """
    from scvi_gen.base._generative_mixin import _META_FORMAT
    from scvi_gen.base._model_files import locate_model_files, read_meta
    from scvi_gen.model._registry import GENERATORS

    meta = read_meta(locate_model_files(model_dir).meta, _META_FORMAT)
    classes = {}
    for spec in GENERATORS.values():
        try:
            cls = spec.model_class()
        except ImportError:  # an optional extra that is not installed
            continue
        classes[cls.__name__] = cls
        classes.update({sub.__name__: sub for sub in cls.__subclasses__()})
    name = meta.get("model")
    if name not in classes:
        raise ValueError(
            f"{model_dir} holds a {name!r} model, which is not a registered generator "
            f"({sorted(classes)}); pass --generator."
        )
    return classes[name]


def cmd_generate(args: argparse.Namespace) -> None:
    """Load a saved generator and write generated cells to an .h5ad file."""
    from scvi_gen.model._registry import get_generator

    labels = _parse_labels(args.labels)
    covariates = _parse_json(args.covariates, "--covariates")
    guidance = _parse_guidance(args.guidance)
    cls = (
        saved_model_class(args.model)
        if args.generator is None
        else get_generator(args.generator).model_class()
    )
    model = cls.load(args.model)
    synthetic = model.generate(
        args.n_cells,
        labels=labels,
        covariates=covariates,
        guidance=guidance,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    synthetic.write_h5ad(args.out)
    print(f"Wrote {synthetic.n_obs} cells x {synthetic.n_vars} genes to {args.out}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Score synthetic cells against a real test set, with the real-vs-real floor."""
    from scvi_gen.benchmark import markdown_table
    from scvi_gen.metrics import evaluate, evaluate_table

    table = evaluate_table(
        evaluate(
            _read_h5ad(args.train),
            _read_h5ad(args.test),
            _read_h5ad(args.synthetic),
            labels_key=args.labels_key,
            layer=args.layer,
            n_hvg=args.n_hvg,
            seed=args.seed,
        )
    )
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"Wrote {args.out}")
    print(markdown_table(table))


def _parse_seeds(text: str) -> list[int]:
    """``"3"`` -> seeds 0, 1, 2; ``"0,5,7"`` -> those seeds."""
    try:
        values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError as err:
        raise SystemExit(f"error: --seeds takes a count or a comma list, got {text!r}.") from err
    if len(values) == 1 and "," not in text:
        if values[0] < 1:
            raise SystemExit("error: --seeds needs at least one seed.")
        return list(range(values[0]))
    return values


def _benchmark_config(args: argparse.Namespace):
    """The run's config: --config (if given) with the explicitly passed options on top."""
    from scvi_gen.benchmark import BenchmarkConfig

    values = {}
    if args.config:
        if not Path(args.config).exists():
            raise SystemExit(f"error: config file {args.config} does not exist.")
        values = BenchmarkConfig.load(args.config).to_dict()
    given = {
        "dataset": args.dataset,
        "split": args.split,
        "n_folds": args.n_folds,
        "labels_key": args.labels_key,
        "test_size": args.test_size,
        "n_top_genes": args.n_top_genes,
        "n_pcs": args.n_pcs,
        "n_threads": args.threads,
    }
    values.update({k: v for k, v in given.items() if v is not None})
    if args.generators:
        values["generators"] = [g.strip() for g in args.generators.split(",") if g.strip()]
    if args.seeds:
        values["seeds"] = _parse_seeds(args.seeds)
    if args.classifiers:
        text = args.classifiers.strip()
        values["classifiers"] = [] if text == "none" else [c.strip() for c in text.split(",")]
    overrides = values.get("overrides", {})
    for name, sections in (_parse_json(args.settings, "--settings") or {}).items():
        if not isinstance(sections, dict):
            raise SystemExit(f"error: --settings[{name!r}] must be a JSON object.")
        merged = overrides.setdefault(name, {})
        for section, kwargs in sections.items():
            merged[section] = {**merged.get(section, {}), **kwargs}
    if args.max_epochs is not None:
        for name in values.get("generators", BenchmarkConfig().generators):
            train = overrides.setdefault(name, {}).setdefault("train", {})
            train["max_epochs"] = args.max_epochs
    values["overrides"] = overrides
    try:
        return BenchmarkConfig(**values)
    except (KeyError, ValueError) as err:
        raise SystemExit(f"error: {err}") from err


def cmd_benchmark(args: argparse.Namespace) -> None:
    """Run the benchmark protocol and print where the report is."""
    from scvi_gen.benchmark import run_benchmark

    config = _benchmark_config(args)
    if args.out:
        out = Path(args.out)
    elif args.config:
        out = Path(args.config).parent
    else:
        out = Path("benchmark_results") / f"{Path(config.dataset).stem}_{config.split}"
    if not args.verbose:
        for name in ("scvi", "lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.ERROR)
    run = run_benchmark(config, out, progress_bar=not args.no_progress, plots=not args.no_plots)
    if run.report is not None:
        print(run.report.read_text())
    print(f"Run directory: {out} ({run.seconds:.0f} s); results in {out / 'results.csv'}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``scvi-gen``."""
    from scvi_gen.model._registry import GENERATORS

    names = sorted(GENERATORS)
    parser = argparse.ArgumentParser(
        prog="scvi-gen",
        description="Train single-cell generators, generate synthetic cells and evaluate them.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log progress (INFO); show tracebacks of errors",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="train, generate and evaluate on real PBMCs; writes .h5ad, tables and a plot",
        description=(
            "The main job: train a generator on real cells (PBMC3K where present, else scanpy's "
            "pbmc68k_reduced), generate cells for every label, evaluate against a held-out split "
            "and write synthetic.h5ad, metrics.csv/.md and embedding.png."
        ),
    )
    demo.add_argument("--out", default="scvi_gen_demo", help="output directory")
    demo.add_argument("--dataset", default="auto", choices=["auto", "pbmc3k", "pbmc68k_reduced"])
    demo.add_argument("--generator", default="scvi", choices=names)
    demo.add_argument("--n-top-genes", type=int, default=2000)
    demo.add_argument("--max-epochs", type=int, default=None)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser("train", help="train a generator on an .h5ad file and save it")
    train.add_argument("--data", required=True, help="input .h5ad with raw counts")
    train.add_argument("--generator", default="scvi", choices=names)
    train.add_argument("--out", required=True, help="directory to save the model into")
    train.add_argument("--layer", default=None, help="layer with counts (default: .X)")
    train.add_argument("--labels-key", default=None, help="obs column with cell labels")
    train.add_argument("--batch-key", default=None, help="obs column with batches")
    train.add_argument("--categorical-covariate-keys", nargs="*", default=None)
    train.add_argument("--max-epochs", type=int, default=None)
    train.add_argument("--model-kwargs", default=None, help="JSON object of model arguments")
    train.add_argument("--train-kwargs", default=None, help="JSON object of train() arguments")
    train.add_argument("--overwrite", action="store_true")
    train.set_defaults(func=cmd_train)

    gen = sub.add_parser("generate", help="generate cells with a saved model")
    gen.add_argument("--model", required=True, help="directory of a saved model")
    gen.add_argument(
        "--generator",
        default=None,
        choices=names,
        help="the saved model's kind (default: read from the saved model)",
    )
    gen.add_argument("--out", required=True, help="output .h5ad")
    gen.add_argument("--n-cells", type=int, default=None)
    gen.add_argument("--labels", default=None, help="'B=500,NK=200' or one label name")
    gen.add_argument("--covariates", default=None, help='JSON, e.g. \'{"batch": "b1"}\'')
    gen.add_argument("--guidance", default=None, help="a weight or a JSON object of weights")
    gen.add_argument("--batch-size", type=int, default=None)
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(func=cmd_generate)

    ev = sub.add_parser("evaluate", help="score synthetic cells against real held-out cells")
    ev.add_argument("--train", required=True, help="real training .h5ad (counts)")
    ev.add_argument("--test", required=True, help="real test .h5ad (counts)")
    ev.add_argument("--synthetic", required=True, help="synthetic .h5ad")
    ev.add_argument("--labels-key", default=None)
    ev.add_argument("--layer", default=None)
    ev.add_argument("--n-hvg", type=int, default=2000)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", default=None, help="CSV to write")
    ev.set_defaults(func=cmd_evaluate)

    bench = sub.add_parser(
        "benchmark",
        help="train/generate/evaluate generators over splits and seeds; writes a report",
        description=(
            "The benchmark protocol: stratified train/test splits (or k-fold with Q3 top-up "
            "augmentation) per seed; each generator trains on the training cells only; "
            "distribution metrics against held-out cells with the real-vs-real floor; "
            "downstream classifiers with augmentation, an oversampling control and "
            "train-on-synthetic. Writes config.json, one CSV per finished cell (a rerun "
            "resumes), results.csv, summary.md and PNG plots."
        ),
    )
    bench.add_argument("--config", default=None, help="config.json of a run to repeat/resume")
    bench.add_argument("--dataset", default=None, help="pbmc3k (default), pancreas, ... or .h5ad")
    bench.add_argument("--generators", default=None, help=f"comma list of {', '.join(names)}")
    bench.add_argument("--split", default=None, choices=["train-test", "kfold"])
    bench.add_argument("--seeds", default=None, help="a count N (seeds 0..N-1) or '0,5,7'")
    bench.add_argument("--n-folds", type=int, default=None)
    bench.add_argument("--labels-key", default=None)
    bench.add_argument("--test-size", type=float, default=None)
    bench.add_argument("--n-top-genes", type=int, default=None)
    bench.add_argument("--n-pcs", type=int, default=None)
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
    bench.add_argument("--out", default=None, help="run directory")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.add_argument("--no-plots", action="store_true", help="report without PNG plots")
    bench.set_defaults(func=cmd_benchmark)
    return parser


#: Errors that report bad input (data, arguments, files): one line, not a traceback.
#: OSError covers unreadable or unwritable paths (FileNotFoundError, permissions, a full
#: disk); a pickle error can only come from a file that is not what it claims to be. Saved
#: models report truncated or foreign weights as ValueError (see ``_model_files``).
_USER_ERRORS = (ValueError, KeyError, TypeError, OSError, pickle.UnpicklingError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scvi-gen`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        args.func(args)
    except _USER_ERRORS as err:
        if args.verbose:
            raise
        message = err.args[0] if len(err.args) == 1 else str(err)
        # One line, whatever the library put into its message.
        message = " ".join(str(message).split())
        print(f"scvi-gen: error: {message} (--verbose shows the traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
