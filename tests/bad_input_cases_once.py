"""Rows of the bad-input matrix that run once: ``metrics.evaluate``, MuData CFGen, the CLI.

See :mod:`tests.bad_input_cases` for the outcome classes.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from tests.bad_input_cases import LOOKUP_ERRORS, Case
from tests.bad_input_cases_files import LEGACY, WEIGHTS, Payload
from tests.conftest import make_counts_adata

#: Fast metrics for the evaluate rows (the bad inputs fail before any metric runs).
_METRICS = ["mmd_rbf", "wasserstein_1", "gene_mean_corr"]


@dataclass
class OnceContext:
    """What the run-once cases work on: scratch space and one saved tiny model.

    Attributes
    ----------
    workdir
        Scratch directory; :meth:`fresh` gives a new empty one inside it.
    saved
        A saved tiny SCVIGenerator (for the CLI rows).
    """

    workdir: Path
    saved: Path
    _counter: itertools.count = field(default_factory=itertools.count)

    def fresh(self) -> Path:
        path = self.workdir / f"once{next(self._counter)}"
        path.mkdir(parents=True)
        return path

    @functools.cached_property
    def multimodal(self) -> Any:
        """A tiny RNA + protein CFGen trained one epoch per stage (built on first use)."""
        from scvi_gen.model.cfgen import CFGen

        mdata = make_mudata(40)
        CFGen.setup_mudata(mdata, labels_key="cell_type", modalities=_MODALITIES)
        model = CFGen(
            mdata,
            n_latent=4,
            encoder_hidden=(16,),
            decoder_hidden=(16,),
            flow_hidden=16,
            flow_blocks=1,
            flow_context=8,
        )
        model.train(max_epochs_autoencoder=1, max_epochs_flow=1, enable_progress_bar=False)
        return model


# --------------------------------------------------------------------------- metrics
def _sets() -> tuple[ad.AnnData, ad.AnnData, ad.AnnData]:
    return (
        make_counts_adata(60, 30, seed=1),
        make_counts_adata(40, 30, seed=2),
        make_counts_adata(40, 30, seed=3),
    )


def _evaluate(edit: Any) -> Any:
    def run(ctx: OnceContext) -> Any:
        from scvi_gen.metrics import evaluate

        train, test, synthetic = _sets()
        train, test, synthetic, kwargs = edit(train, test, synthetic)
        return evaluate(
            train, test, synthetic, **{"n_hvg": 20, "n_pcs": 5, "metrics": _METRICS, **kwargs}
        )

    return run


def _nan_synthetic(train: Any, test: Any, synthetic: Any) -> Any:
    values = synthetic.X.toarray()
    values[0, 0] = np.nan
    synthetic.X = sp.csr_matrix(values)
    return train, test, synthetic, {}


def _other_genes(train: Any, test: Any, synthetic: Any) -> Any:
    synthetic.var_names = [f"other{j}" for j in range(synthetic.n_vars)]
    return train, test, synthetic, {}


def _check_scores(df: Any, ctx: OnceContext) -> None:
    assert isinstance(df, pd.DataFrame) and len(df), "no scores"
    assert {"floor", "synthetic"} <= set(df["comparison"]), "a comparison is missing"
    assert np.all(np.isfinite(df["value"].astype(float))), "non-finite scores"


def metrics_cases() -> list[Case]:
    """Bad inputs of :func:`scvi_gen.metrics.evaluate`."""
    few = r"`{}` needs at least 4 cells.*got {}"
    return [
        Case(
            "evaluate_one_synthetic_cell",
            _evaluate(lambda tr, te, sy: (tr, te, sy[:1].copy(), {})),
            match=few.format("synthetic", 1),
        ),
        Case(
            "evaluate_empty_synthetic",
            _evaluate(lambda tr, te, sy: (tr, te, sy[:0].copy(), {})),
            match=few.format("synthetic", 0),
        ),
        Case(
            "evaluate_one_test_cell",
            _evaluate(lambda tr, te, sy: (tr, te[:1].copy(), sy, {})),
            match=few.format("test", 1),
        ),
        Case(
            "evaluate_empty_train",
            _evaluate(lambda tr, te, sy: (tr[:0].copy(), te, sy, {})),
            match=r"`train`.*(empty|at least)",
        ),
        Case(
            "evaluate_mismatched_genes",
            _evaluate(_other_genes),
            error=LOOKUP_ERRORS,
            match=r"`synthetic`.*genes",
        ),
        Case(
            "evaluate_nan_synthetic", _evaluate(_nan_synthetic), match=r"synthetic\.X contains NaN"
        ),
        Case(
            "evaluate_labels_key_missing",
            _evaluate(lambda tr, te, sy: (tr, te, sy, {"labels_key": "nope"})),
            error=LOOKUP_ERRORS,
            match=r"`labels_key` 'nope' not found in \w+\.obs",
        ),
        Case(
            "evaluate_unknown_metric",
            _evaluate(lambda tr, te, sy: (tr, te, sy, {"metrics": ["nope"]})),
            match=r"Unknown metrics \['nope'\]; available",
        ),
        Case(
            "evaluate_good_input",
            _evaluate(lambda tr, te, sy: (tr, te, sy, {})),
            "correct",
            check=_check_scores,
        ),
    ]


# --------------------------------------------------------------------------- MuData
_MODALITIES = {"rna_layer": "rna", "protein_layer": "prot"}


def make_mudata(n_cells: int = 30) -> Any:
    """Tiny RNA (12 genes) + protein (5) counts with 3 labels in ``mdata.obs``."""
    import mudata as md

    rng = np.random.default_rng(0)
    rna = make_counts_adata(n_cells, 12, 3, seed=0)
    prot = ad.AnnData(sp.csr_matrix(rng.poisson(5.0, size=(n_cells, 5)).astype(np.float32)))
    prot.var_names = [f"prot{j}" for j in range(5)]
    prot.obs_names = rna.obs_names
    labels = rna.obs["cell_type"].to_numpy()
    rna.obs = rna.obs.iloc[:, :0]
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": rna, "prot": prot})
    mdata.obs["cell_type"] = pd.Categorical(labels)
    return mdata


def _setup(edit: Any, **kwargs: Any) -> Any:
    def run(ctx: OnceContext) -> Any:
        from scvi_gen.model.cfgen import CFGen

        mdata = edit(make_mudata())
        kwargs.setdefault("modalities", _MODALITIES)
        return CFGen.setup_mudata(
            mdata, labels_key=kwargs.pop("labels_key", "cell_type"), **kwargs
        )

    return run


def _prot_values(change: Any) -> Any:
    def edit(mdata: Any) -> Any:
        values = mdata.mod["prot"].X.toarray()
        change(values)
        mdata.mod["prot"].X = values
        return mdata

    return edit


def _nan_label(mdata: Any) -> Any:
    labels = mdata.obs["cell_type"].copy()
    labels.iloc[0] = np.nan
    mdata.obs["cell_type"] = labels
    return mdata


def _check_multimodal(syn: Any, ctx: OnceContext) -> None:
    assert {k: m.shape for k, m in syn.mod.items()} == {"rna": (6, 12), "prot": (6, 5)}
    for mod in syn.mod.values():
        values = mod.X.data if sp.issparse(mod.X) else np.asarray(mod.X)
        assert np.all(np.isfinite(values)) and np.all(values >= 0), "bad generated values"
        assert np.all(values == np.round(values)), "non-integer counts"


def _generate_mm(**kwargs: Any) -> Any:
    return lambda ctx: ctx.multimodal.generate(**{"seed": 0, "progress_bar": False, **kwargs})


def mudata_cases() -> list[Case]:
    """Bad inputs of MuData CFGen (setup and generation)."""
    return [
        Case(
            "mudata_anndata_given",
            lambda ctx: _anndata_to_setup_mudata(),
            match=r"setup_mudata needs a MuData.*setup_anndata",
        ),
        Case(
            "mudata_missing_modality",
            _setup(lambda m: m, modalities={"rna_layer": "rna", "protein_layer": "adt"}),
            error=LOOKUP_ERRORS,
            match=r"'protein_layer'.*'adt'.*available: \['rna', 'prot'\]",
        ),
        Case(
            "mudata_no_modalities",
            _setup(lambda m: m, modalities=None),
            match=r"Pass `modalities`",
        ),
        Case(
            "mudata_unknown_modality_key",
            _setup(lambda m: m, modalities={"protein": "prot"}),
            match=r"Unknown keys",
        ),
        Case(
            "mudata_non_integer",
            _setup(_prot_values(lambda v: v.__iadd__(0.5))),
            match=r"mdata\['prot'\]\.X contains non-integer.*protein_layer=",
        ),
        Case(
            "mudata_nan",
            _setup(_prot_values(lambda v: v.__setitem__((0, 0), np.nan))),
            match=r"mdata\['prot'\]\.X contains NaN",
        ),
        Case(
            "mudata_negative",
            _setup(_prot_values(lambda v: v.__setitem__((0, 0), -2))),
            match=r"mdata\['prot'\]\.X contains negative",
        ),
        Case(
            "mudata_labels_key_missing",
            _setup(lambda m: m, labels_key="nope"),
            error=LOOKUP_ERRORS,
            match=r"'nope' is not a column of mdata\.obs",
        ),
        Case(
            "mudata_labels_nan",
            _setup(_nan_label),
            match=r"mdata\.obs\['cell_type'\] has 1 missing values",
        ),
        Case(
            "mudata_layer_missing",
            _setup(lambda m: m, rna_layer="counts"),
            error=LOOKUP_ERRORS,
            match=r"mdata\['rna'\]\.layers\['counts'\]",
        ),
        Case(
            "mudata_generate_unknown_label",
            _generate_mm(labels={"nope": 2}),
            error=LOOKUP_ERRORS,
            match=r"'nope'",
        ),
        Case(
            "mudata_generate_bad_seed", _generate_mm(n_cells=2, seed="x"), match=r"`seed` must be"
        ),
        Case("mudata_generate", _generate_mm(n_cells=6), "correct", check=_check_multimodal),
    ]


def _anndata_to_setup_mudata() -> Any:
    from scvi_gen.model.cfgen import CFGen

    return CFGen.setup_mudata(make_counts_adata(30), modalities={"rna_layer": "rna"})


# --------------------------------------------------------------------------- CLI
class CLIError(ValueError):
    """The CLI exited with code 2 and one line on stderr (the message is that line)."""


class CLIExitStatusError(RuntimeError):
    """The CLI exited with a status other than 0 (success) or 2 (a user error)."""


def _cli(argv: Any) -> Any:
    """A run calling ``scvi_gen.cli.main(argv(ctx))`` in-process.

    Exit code 2 with one ``scvi-gen: error:`` line and no traceback raises :class:`CLIError`
    (a clear error when its message matches); exit code 0 returns the output.
    """

    def run(ctx: OnceContext) -> Any:
        from scvi_gen.cli import main

        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main([str(a) for a in argv(ctx)])
            except SystemExit as exit_:
                # Python prints a string code to stderr and exits with status 1.
                code = exit_.code if isinstance(exit_.code, int) else 1
                if not isinstance(exit_.code, int):
                    print(exit_.code, file=sys.stderr)
        text = err.getvalue()
        if code not in (0, 2):
            raise CLIExitStatusError(f"exit status {code}, expected 2; stderr: {text.strip()}")
        if code == 2:
            assert "Traceback" not in text, "a traceback on stderr"
            assert text.startswith("scvi-gen: error: "), f"not one error line: {text!r}"
            assert text.count("\n") == 1, f"{text.count(chr(10))} lines on stderr"
            raise CLIError(text.strip())
        return code, out.getvalue()

    return run


def _not_h5ad(ctx: OnceContext) -> list[Any]:
    path = ctx.fresh() / "cells.h5ad"
    path.write_text("gene,cell\n1,2\n")
    return ["train", "--data", path, "--out", path.parent / "m"]


def _model_copy(ctx: OnceContext) -> Path:
    target = ctx.fresh() / "model"
    shutil.copytree(ctx.saved, target)
    return target


def _generate_args(model: Path) -> list[Any]:
    return ["generate", "--model", model, "--out", model.parent / "o.h5ad", "--n-cells", 3]


def _truncated(ctx: OnceContext) -> list[Any]:
    model = _model_copy(ctx)
    data = (model / WEIGHTS).read_bytes()
    (model / WEIGHTS).write_bytes(data[: len(data) // 2])
    return _generate_args(model)


def _payload(ctx: OnceContext) -> list[Any]:
    model = _model_copy(ctx)
    (model / WEIGHTS).unlink()
    torch.save({"w": Payload(model.parent / "payload_ran")}, model / LEGACY)
    return _generate_args(model)


def _payload_never_runs(ctx: OnceContext) -> Any:
    argv = _payload(ctx)
    try:
        return _cli(lambda c: argv)(ctx)
    finally:
        assert not (Path(argv[2]).parent / "payload_ran").exists(), "the pickle payload ran"


def _check_cli_generate(result: Any, ctx: OnceContext) -> None:
    code, out = result
    assert code == 0 and "Wrote 3 cells" in out, f"exit {code}: {out!r}"


def cli_cases() -> list[Case]:
    """The ``scvi-gen`` command: one line on stderr and exit code 2 for bad files."""
    return [
        Case("cli_not_h5ad", _cli(_not_h5ad), match=r"cells\.h5ad is not a readable \.h5ad"),
        Case(
            "cli_missing_data",
            _cli(lambda c: ["train", "--data", c.fresh() / "none.h5ad", "--out", c.fresh() / "m"]),
            match=r"none\.h5ad does not exist",
        ),
        Case(
            "cli_truncated_weights",
            _cli(_truncated),
            match=r"model\.safetensors is not a readable weights file",
        ),
        Case(
            "cli_pickle_payload",
            _payload_never_runs,
            match=r"model_state\.pt holds more than tensors",
        ),
        Case(
            "cli_labels_bad",
            _cli(lambda c: [*_generate_args(_model_copy(c)), "--labels", "nope"]),
            error=LOOKUP_ERRORS,
            match=r"'nope'",
        ),
        Case(
            "cli_generate",
            _cli(lambda c: _generate_args(_model_copy(c))),
            "correct",
            check=_check_cli_generate,
        ),
    ]


def once_cases() -> list[Case]:
    """Every run-once row."""
    return [*metrics_cases(), *mudata_cases(), *cli_cases()]
