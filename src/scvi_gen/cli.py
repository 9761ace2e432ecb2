"""The ``scvi-gen`` command: demo, train, generate, evaluate."""

from __future__ import annotations

import argparse
import json
import logging
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
    return ad.read_h5ad(path)


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

    adata = _read_h5ad(args.data)
    spec = get_generator(args.generator)
    model_cls = spec.model_class()
    if args.labels_key and adata.obs[args.labels_key].isna().any():
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


def cmd_generate(args: argparse.Namespace) -> None:
    """Load a saved generator and write generated cells to an .h5ad file."""
    from scvi_gen.model._registry import get_generator

    labels = _parse_labels(args.labels)
    covariates = _parse_json(args.covariates, "--covariates")
    guidance = _parse_guidance(args.guidance)
    model = get_generator(args.generator).model_class().load(args.model)
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``scvi-gen``."""
    from scvi_gen.model._registry import GENERATORS

    names = sorted(GENERATORS)
    parser = argparse.ArgumentParser(
        prog="scvi-gen",
        description="Train single-cell generators, generate synthetic cells and evaluate them.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
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
    gen.add_argument("--generator", default="scvi", choices=names, help="the saved model's kind")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scvi-gen`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
