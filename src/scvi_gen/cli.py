"""The ``scvi-gen`` command: demo, split, train, generate, evaluate, benchmark."""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class UsageError(ValueError):
    """A bad command-line value: reported as one ``scvi-gen: error:`` line, exit code 2."""


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
            raise UsageError(f"cannot read --labels entry {part!r}; use NAME=COUNT.")
        if name.strip() in plan:
            raise UsageError(f"--labels names {name.strip()!r} twice; give it once.")
        plan[name.strip()] = int(n)
    return plan


def _parse_json(text: str | None, option: str) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"{option} must be JSON, e.g. '{{\"max_epochs\": 50}}' ({err}).") from err
    if not isinstance(value, dict):
        raise UsageError(f"{option} must be a JSON object.")
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
        raise UsageError(f"--guidance must be a number or a JSON object, got {text!r}.") from err


def _read_h5ad(path: str):
    import anndata as ad

    if not Path(path).exists():
        raise FileNotFoundError(f"file {path} does not exist.")
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


def _parse_devices(text: str) -> int | str:
    """Lightning's ``devices``: ``"auto"``, a count (``"2"``) or indices (``"0,1"``)."""
    text = text.strip()
    return int(text) if text.isdigit() else text


def _device_kwargs(train: Any, args: argparse.Namespace, generator: str) -> dict[str, Any]:
    """``accelerator``/``devices`` for ``model.train`` when it takes them."""
    params = inspect.signature(train).parameters
    takes = "accelerator" in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
    )
    if takes:
        return {"accelerator": args.accelerator, "devices": _parse_devices(args.devices)}
    if args.accelerator != "auto" or args.devices != "auto":
        raise UsageError(
            f"the {generator} generator does not train with Lightning and takes no "
            "--accelerator/--devices; leave them at 'auto'."
        )
    return {}


def cmd_train(args: argparse.Namespace) -> None:
    """Set up, train and save a generator on an .h5ad file."""
    from scvi_gen.model._registry import get_generator

    if Path(args.out).exists() and not args.overwrite:
        raise UsageError(f"{args.out} already exists; pass --overwrite or choose another --out.")
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
        **_device_kwargs(model.train, args, args.generator),
        **(_parse_json(args.train_kwargs, "--train-kwargs") or {}),
    }
    if args.max_epochs is not None:
        train_kwargs["max_epochs"] = args.max_epochs
    logger.info("Training %s on %d cells x %d genes.", args.generator, *adata.shape)
    model.train(**train_kwargs)
    model.save(args.out, overwrite=args.overwrite)
    print(f"Saved {args.generator} model ({adata.n_obs} training cells) to {args.out}")


def _generation_device(accelerator: str, devices: str) -> str:
    """The one torch device ``generate`` runs on, from Lightning-style flags."""
    accelerator = accelerator.strip().lower()
    devices = devices.strip().lower()
    if accelerator in ("cpu", "mps"):
        return accelerator
    if accelerator in ("gpu", "cuda"):
        if devices == "auto":
            return "cuda"
        if devices.isdigit():
            return f"cuda:{devices}"
        raise UsageError(
            f"generate runs on one device: --devices must be 'auto' or one GPU index, got "
            f"{devices!r}."
        )
    if devices != "auto":
        raise UsageError("--devices needs --accelerator gpu (e.g. --accelerator gpu --devices 1).")
    return "auto"


def cmd_split(args: argparse.Namespace) -> None:
    """Write the stratified train/test (and validation) .h5ad files the other commands use."""
    from scvi_gen._settings import settings
    from scvi_gen.datasets import train_test_split

    if not 0.0 <= args.validation_size < 1.0 - args.test_size:
        raise UsageError(
            f"--validation-size must be >= 0 and leave training cells next to --test-size "
            f"{args.test_size}; got {args.validation_size}."
        )
    out_dir = Path(args.out_dir)
    names = ["train", "test"] + (["validation"] if args.validation_size > 0 else [])
    paths = {name: out_dir / f"{args.prefix}{name}.h5ad" for name in names}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not args.overwrite:
        raise UsageError(f"{', '.join(existing)} already exist; pass --overwrite.")
    adata = _read_h5ad(args.data)
    parts = dict(
        zip(
            ("train", "test"),
            train_test_split(adata, args.labels_key, test_size=args.test_size, seed=args.seed),
            strict=True,
        )
    )
    if args.validation_size > 0:
        # Validation as a fraction of all cells, taken from the training part.
        fraction = args.validation_size / (1.0 - args.test_size)
        parts["train"], parts["validation"] = train_test_split(
            parts["train"], args.labels_key, test_size=fraction, seed=args.seed
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        part.write_h5ad(paths[name])
        counts = ""
        if args.labels_key is not None and settings.verbosity >= 2:
            counts = (
                " ("
                + ", ".join(
                    f"{k} {v}" for k, v in part.obs[args.labels_key].value_counts().items()
                )
                + ")"
            )
        print(f"Wrote {part.n_obs} cells to {paths[name]}{counts}")


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
    from scvi_gen._settings import settings
    from scvi_gen.model._registry import get_generator

    labels = _parse_labels(args.labels)
    covariates = _parse_json(args.covariates, "--covariates")
    guidance = _parse_guidance(args.guidance)
    device = _generation_device(args.accelerator, args.devices)
    cls = (
        saved_model_class(args.model)
        if args.generator is None
        else get_generator(args.generator).model_class()
    )
    load_params = inspect.signature(cls.load).parameters
    model = cls.load(args.model, **({"device": device} if "device" in load_params else {}))
    gen_params = inspect.signature(model.generate).parameters
    extra = {"progress_bar": settings.progress_bars} if "progress_bar" in gen_params else {}
    synthetic = model.generate(
        args.n_cells,
        labels=labels,
        covariates=covariates,
        guidance=guidance,
        batch_size=args.batch_size,
        seed=args.seed,
        **extra,
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
        raise UsageError(f"--seeds takes a count or a comma list, got {text!r}.") from err
    if len(values) == 1 and "," not in text:
        if values[0] < 1:
            raise UsageError("--seeds needs at least one seed.")
        return list(range(values[0]))
    return values


def _benchmark_config(args: argparse.Namespace):
    """The run's config: --config (if given) with the explicitly passed options on top."""
    from scvi_gen.benchmark import BenchmarkConfig

    values = {}
    if args.config:
        if not Path(args.config).exists():
            raise UsageError(f"config file {args.config} does not exist.")
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
            raise UsageError(f"--settings[{name!r}] must be a JSON object.")
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
        raise UsageError(f"{err}") from err


def cmd_benchmark(args: argparse.Namespace) -> None:
    """Run the benchmark protocol and print where the report is."""
    from scvi_gen._settings import training_output
    from scvi_gen.benchmark import run_benchmark

    config = _benchmark_config(args)
    if args.out:
        out = Path(args.out)
    elif args.config:
        out = Path(args.config).parent
    else:
        out = Path("benchmark_results") / f"{Path(config.dataset).stem}_{config.split}"
    # Scoped, not a global setLevel: main() runs in-process from Python and tests too, and
    # a permanent level would silence Lightning for the rest of the session.
    with training_output():
        run = run_benchmark(
            config, out, progress_bar=not args.no_progress, plots=not args.no_plots
        )
    if run.report is not None:
        print(run.report.read_text())
    print(f"Run directory: {out} ({run.seconds:.0f} s); results in {out / 'results.csv'}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``scvi-gen``."""
    from scvi_gen._cli_parser import build_parser as build

    return build(
        {
            "demo": cmd_demo,
            "split": cmd_split,
            "train": cmd_train,
            "generate": cmd_generate,
            "evaluate": cmd_evaluate,
            "benchmark": cmd_benchmark,
        }
    )


#: Errors that report bad input (data, arguments, files): one line, not a traceback.
#: OSError covers unreadable or unwritable paths (FileNotFoundError, permissions, a full
#: disk); a pickle error can only come from a file that is not what it claims to be. Saved
#: models report truncated or foreign weights as ValueError (see ``_model_files``).
_USER_ERRORS = (ValueError, KeyError, TypeError, OSError, pickle.UnpicklingError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scvi-gen`` command."""
    from scvi_gen._settings import settings

    args = build_parser().parse_args(argv)
    try:
        with settings.override(verbosity=1 + args.verbose - args.quiet):
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
