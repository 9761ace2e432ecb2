"""Per-model rows of the bad-input matrix: training data and ``generate`` arguments.

See :mod:`tests.bad_input_cases` for the outcome classes. Each function returns the rows for
one model class (expectations differ only where the contract says so: guidance, output kind).
"""

from __future__ import annotations

import warnings
from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp

from scvi_gen.base._library_size import MAX_LIBRARY_SIZE
from tests.bad_input_cases import (
    GUIDED,
    LOOKUP_ERRORS,
    PER_LABEL_SYNTHESIZERS,
    Case,
    ModelContext,
    check_cells,
    fit_and_generate,
    generate,
    generated_ok,
    tiny,
)


# ------------------------------------------------------------------ training data
def _dense(adata: ad.AnnData) -> np.ndarray:
    return adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)


def _set_values(edit: Any) -> Any:
    """A run that fits on tiny data whose dense counts ``edit`` changed in place."""

    def run(ctx: ModelContext) -> Any:
        adata = tiny()
        values = _dense(adata).astype(np.float64)
        edit(values)
        adata.X = sp.csr_matrix(values)
        return fit_and_generate(ctx, adata)

    return run


def _fit(make: Any, **setup: Any) -> Any:
    """A run that fits on ``make(ctx)`` (an AnnData) and generates 6 cells."""
    return lambda ctx: fit_and_generate(ctx, make(ctx), **setup)


def _identical_cells(ctx: ModelContext) -> ad.AnnData:
    adata = tiny()[:3].copy()
    adata.X = sp.csr_matrix(np.repeat(_dense(adata)[:1], 3, axis=0))
    return adata


def _backed(ctx: ModelContext) -> ad.AnnData:
    path = ctx.fresh() / "data.h5ad"
    tiny().write_h5ad(path)
    return ad.read_h5ad(path, backed="r")


def _one_cell_label(ctx: ModelContext) -> Any:
    adata = tiny()
    labels = adata.obs["cell_type"].cat.add_categories(["rare"])
    labels[0] = "rare"
    adata.obs["cell_type"] = labels
    model = ctx.fit(adata)
    return model, model.generate(labels={"rare": 3}, seed=0, progress_bar=False)


def _check_rare(result: Any, ctx: ModelContext) -> None:
    model, syn = result
    check_cells(syn, ctx, 3, model=model)
    assert list(syn.obs["cell_type"].astype(str)) == ["rare"] * 3, "not the requested label"


def _with_obs(edit: Any) -> Any:
    def make(ctx: ModelContext) -> ad.AnnData:
        adata = tiny()
        edit(adata)
        return adata

    return make


def _nan_label(adata: ad.AnnData) -> None:
    labels = adata.obs["cell_type"].copy()
    labels[0] = np.nan
    adata.obs["cell_type"] = labels


def _duplicate_obs(adata: ad.AnnData) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.obs_names = [f"cell{i // 2}" for i in range(adata.n_obs)]


def _duplicate_var(adata: ad.AnnData) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.var_names = ["gene0", *adata.var_names[:-1]]


def _log_in_x(adata: ad.AnnData) -> None:
    adata.layers["counts"] = adata.X.copy()
    adata.X = sp.csr_matrix(np.log1p(_dense(adata)) + 0.1)


def _int_labels(adata: ad.AnnData) -> None:
    adata.obs["cell_type"] = adata.obs["cell_type"].cat.codes.astype(int)


def _one_gene_case(cls: type) -> Case:
    run = _fit(lambda ctx: tiny()[:, :1].copy())
    if cls.__name__ == "MOEFlow":  # coupling layers need two halves of the genes
        return Case("one_gene", run, match=r"MOEFlow.*needs at least 2 genes.*Train on 2 or more")
    return Case("one_gene", run, "correct", check=generated_ok())


def _one_cell_label_cases(cls: type) -> list[Case]:
    """A label with one training cell: generated like any other, except by SDV baselines.

    Those fit one synthesizer per label (at least 2 cells): asked for the label they say so
    and what to do; without ``labels`` they generate the labels they can.
    """
    if cls.__name__ not in PER_LABEL_SYNTHESIZERS:
        return [Case("label_with_one_cell", _one_cell_label, "correct", check=_check_rare)]
    return [
        Case(
            "label_with_one_cell",
            _one_cell_label,
            match=r"No synthesizer was fitted for label 'rare'.*leave it out of `labels`",
        ),
        Case(
            "label_with_one_cell_default_mix",
            lambda ctx: fit_and_generate(ctx, _with_obs(_add_one_cell_label)(ctx), n=60),
            "correct",
            check=_check_without_rare,
            warns=UserWarning,
        ),
    ]


def _add_one_cell_label(adata: ad.AnnData) -> None:
    labels = adata.obs["cell_type"].cat.add_categories(["rare"])
    labels[0] = "rare"
    adata.obs["cell_type"] = labels


def _check_without_rare(result: Any, ctx: ModelContext) -> None:
    generated_ok(60)(result, ctx)
    assert "rare" not in set(result[1].obs["cell_type"].astype(str)), "made an unfitted label"


def _duplicate_var_case(cls: type) -> Case:
    run = _fit(_with_obs(_duplicate_var))
    if cls.__name__ in PER_LABEL_SYNTHESIZERS:  # the SDV baselines select genes by name
        return Case(
            "duplicate_var_names", run, match=r"var_names must be unique.*var_names_make_unique"
        )
    # Repeated gene names are supported (genes are matched by position, not by name).
    return Case("duplicate_var_names", run, "correct", check=generated_ok())


def data_cases(cls: type) -> list[Case]:
    """Bad or unusual training data, from setup to the first generated cells."""
    counts = "raw counts"
    rows = [
        Case(
            "counts_non_integer",
            _set_values(lambda v: v.__iadd__(0.5)),
            match=rf"adata\.X contains non-integer values.*{counts}.*layer=",
        ),
        Case(
            "counts_negative",
            _set_values(lambda v: v.__setitem__((0, 0), -1)),
            match=rf"adata\.X contains negative values.*{counts}.*layer=",
        ),
        Case(
            "counts_nan",
            _set_values(lambda v: v.__setitem__((0, 0), np.nan)),
            match=r"adata\.X contains NaN or infinite values; remove or impute",
        ),
        Case(
            "counts_inf",
            _set_values(lambda v: v.__setitem__((1, 2), np.inf)),
            match=r"adata\.X contains NaN or infinite values; remove or impute",
        ),
        Case(
            "empty_no_cells",
            _fit(lambda ctx: tiny()[:0].copy()),
            match=r"AnnData is empty \(0 cells.*at least one cell",
        ),
        Case(
            "empty_no_genes",
            _fit(lambda ctx: tiny()[:, :0].copy()),
            match=r"AnnData is empty .*0 features.*at least one",
        ),
        Case(
            "one_cell",
            _fit(lambda ctx: tiny()[:1].copy()),
            match=rf"Cannot train {cls.__name__} on 1 cell.*needs at least \d+ cells.*Pass more cells",
        ),
        Case(
            "three_identical_cells",
            _fit(_identical_cells),
            match=rf"Cannot train {cls.__name__} on 3 cell.*needs at least \d+ cells.*Pass more cells",
        ),
        _one_gene_case(cls),
        Case(
            "all_zero_cells",
            _set_values(lambda v: v.__setitem__(slice(0, 5), 0)),
            "correct",
            check=generated_ok(),
        ),
        Case(
            "all_zero_genes",
            _set_values(lambda v: v.__setitem__((slice(None), slice(0, 3)), 0)),
            "correct",
            check=generated_ok(),
        ),
        Case(
            "labels_key_missing",
            _fit(lambda ctx: tiny(), labels_key="nope"),
            error=LOOKUP_ERRORS,
            match=r"labels_key='nope' is not a column of adata\.obs",
        ),
        Case(
            "labels_nan",
            _fit(_with_obs(_nan_label)),
            match=r"adata\.obs\['cell_type'\] has 1 missing values\. Drop those cells",
        ),
        *_one_cell_label_cases(cls),
        Case(
            "counts_1e9",
            _set_values(lambda v: v.__setitem__((0, 0), 1e9)),
            "correct",
            check=generated_ok(),
        ),
        Case(
            "dense_input",
            _fit(_with_obs(lambda a: setattr(a, "X", _dense(a)))),
            "correct",
            check=generated_ok(),
        ),
        Case(
            "csc_input",
            _fit(_with_obs(lambda a: setattr(a, "X", sp.csc_matrix(a.X)))),
            "correct",
            check=generated_ok(),
        ),
        Case(
            "int64_counts",
            _fit(_with_obs(lambda a: setattr(a, "X", _dense(a).astype(int)))),
            "correct",
            check=generated_ok(),
        ),
        Case("backed_input", _fit(_backed), "correct", check=generated_ok()),
        Case(
            "view_input",
            _fit(lambda ctx: tiny()[:25]),
            match=r"adata is a view of another AnnData.*adata\.copy\(\)",
        ),
        Case(
            "duplicate_obs_names", _fit(_with_obs(_duplicate_obs)), "correct", check=generated_ok()
        ),
        _duplicate_var_case(cls),
        Case(
            "layer_missing",
            _fit(lambda ctx: tiny(), layer="counts"),
            error=LOOKUP_ERRORS,
            match=r"counts",
        ),
        Case(
            "counts_in_layer",
            _fit(_with_obs(_log_in_x), layer="counts"),
            "correct",
            check=generated_ok(),
        ),
        Case("integer_labels", _fit(_with_obs(_int_labels)), "correct", check=generated_ok()),
    ]
    return rows


# ------------------------------------------------------------------ generate arguments
def _same_cells(run_a: Any, run_b: Any) -> Any:
    return lambda ctx: (run_a(ctx), run_b(ctx))


def _check_same(result: Any, ctx: ModelContext) -> None:
    a, b = result
    check_cells(a, ctx, a.n_obs)
    assert (a.X != b.X).nnz == 0, "the same seed gave other cells"


def _check_n(n: int, label: str | None = None) -> Any:
    def check(syn: Any, ctx: ModelContext) -> None:
        check_cells(syn, ctx, n)
        if label is not None:
            assert set(syn.obs["cell_type"].astype(str)) == {label}, "not the requested label"

    return check


def _check_library(syn: Any, ctx: ModelContext) -> None:
    check_cells(syn, ctx, 8)
    if ctx.counts_output:
        totals = np.asarray(syn.X.sum(axis=1)).ravel()
        # NB counts around the requested total: the mean over cells is within a factor 2.
        assert 250 <= totals.mean() <= 1000, f"library_size=500 gave totals {totals.mean():.0f}"


def _streamed(ctx: ModelContext) -> Any:
    out = ctx.fresh() / "cells.h5ad"
    return ctx.model.generate(5, seed=2, out=out, progress_bar=False), ctx.model.generate(
        5, seed=2, progress_bar=False
    )


def _check_streamed(result: Any, ctx: ModelContext) -> None:
    backed, memory = result
    assert backed.n_obs == 5 and list(backed.var_names) == list(memory.var_names)
    X = backed.X[:]
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    np.testing.assert_array_equal(X, memory.X.toarray(), err_msg="streamed cells differ")


def _out_to(name: str, make_file: bool = False) -> Any:
    def run(ctx: ModelContext) -> Any:
        out = ctx.fresh() / name
        if make_file:
            out.write_text("not a store")
        return ctx.model.generate(3, seed=0, out=out, progress_bar=False)

    return run


def generate_cases(cls: type) -> list[Case]:
    """Every bad ``generate`` argument, and the edge values that must work."""
    name = cls.__name__
    whole = r"`n_cells` must be a whole number"
    rows = [
        Case("n_cells_float", generate(n_cells=2.5), match=whole),
        Case("n_cells_negative", generate(n_cells=-1), match=r"`n_cells` must be a non-negative"),
        Case("n_cells_bool", generate(n_cells=True), match=whole),
        Case("n_cells_str", generate(n_cells="5"), match=whole),
        Case("n_cells_nan", generate(n_cells=float("nan")), match=r"`n_cells` must be a"),
        Case("n_cells_missing", generate(), match=r"`n_cells`"),
        Case("n_cells_zero", generate(n_cells=0), "correct", check=_check_n(0)),
        Case("n_cells_one", generate(n_cells=1), "correct", check=_check_n(1)),
        Case("n_cells_numpy_int", generate(n_cells=np.int64(3)), "correct", check=_check_n(3)),
        Case("labels_empty_list", generate(n_cells=5, labels=[]), match=r"`labels` is empty"),
        Case("labels_int", generate(n_cells=5, labels=5), match=r"`labels` must be one category"),
        Case(
            "labels_unknown",
            generate(n_cells=2, labels="nope"),
            error=LOOKUP_ERRORS,
            match=r"Unknown 'cell_type' categories \['nope'\]; the model was trained on",
        ),
        Case(
            "labels_dict_unknown",
            generate(labels={"nope": 2}),
            error=LOOKUP_ERRORS,
            match=r"Unknown 'cell_type' categories \['nope'\]; the model was trained on",
        ),
        Case(
            "labels_dict_negative",
            generate(labels={"type0": -1}),
            match=r"labels\['type0'\] must be a non-negative",
        ),
        Case(
            "labels_dict_float",
            generate(labels={"type0": 2.5}),
            match=r"labels\['type0'\] must be a whole number",
        ),
        Case(
            "generate_labels_nan",
            generate(n_cells=2, labels=[np.nan]),
            error=LOOKUP_ERRORS,
            match=r"Unknown 'cell_type' categories \['nan'\]; the model was trained on",
        ),
        Case(
            "labels_one",
            generate(n_cells=3, labels="type1"),
            "correct",
            check=_check_n(3, "type1"),
        ),
        Case("labels_dict", generate(labels={"type0": 4}), "correct", check=_check_n(4, "type0")),
        Case(
            "covariates_unknown_key",
            generate(n_cells=2, covariates={"nope": "x"}),
            error=LOOKUP_ERRORS,
            match=r"Unknown covariates \['nope'\]; the model was set up with conditions",
        ),
        Case(
            "covariates_unregistered_batch",
            generate(n_cells=2, covariates={"batch": "b0"}),
            error=LOOKUP_ERRORS,
            match=r"Unknown covariates \['batch'\]; the model was set up with conditions",
        ),
        Case(
            "covariates_not_mapping",
            generate(n_cells=2, covariates="b0"),
            match=r"`covariates` must be a dict.*got str",
        ),
        Case("seed_str", generate(n_cells=2, seed="abc"), match=r"`seed` must be a non-negative"),
        Case("seed_float", generate(n_cells=2, seed=1.7), match=r"`seed` must be a non-negative"),
        Case("seed_bool", generate(n_cells=2, seed=True), match=r"`seed` must be"),
        Case(
            "seed_negative", generate(n_cells=2, seed=-3), match=r"`seed` must be a non-negative"
        ),
        Case(
            "seed_same_cells",
            _same_cells(generate(n_cells=7, seed=3), generate(n_cells=7, seed=3)),
            "correct",
            check=_check_same,
        ),
        Case(
            "batch_size_str",
            generate(n_cells=2, batch_size="abc"),
            match=r"`batch_size` must be a positive",
        ),
        Case(
            "batch_size_float",
            generate(n_cells=2, batch_size=1.5),
            match=r"`batch_size` must be a positive",
        ),
        Case(
            "batch_size_zero",
            generate(n_cells=2, batch_size=0),
            match=r"`batch_size` must be a positive",
        ),
        Case(
            "batch_size_negative",
            generate(n_cells=2, batch_size=-4),
            match=r"`batch_size` must be a positive",
        ),
        Case(
            "batch_size_one_same_cells",
            _same_cells(generate(n_cells=7, seed=3, batch_size=1), generate(n_cells=7, seed=3)),
            "correct",
            check=_check_same,
        ),
        Case(
            "library_size_1e39",
            generate(n_cells=2, library_size=1e39),
            match=r"`library_size` must be at most .*realistic",
        ),
        Case(
            "library_size_1e12",
            generate(n_cells=2, library_size=1e12),
            match=r"`library_size` must be at most .*realistic",
        ),
        Case(
            "library_size_nan",
            generate(n_cells=2, library_size=float("nan")),
            match=r"`library_size` must be positive and finite",
        ),
        Case(
            "library_size_negative",
            generate(n_cells=2, library_size=-5.0),
            match=r"`library_size` must be positive and finite",
        ),
        Case(
            "library_size_zero",
            generate(n_cells=2, library_size=0),
            match=r"`library_size` must be positive and finite",
        ),
        Case(
            "library_size_str",
            generate(n_cells=2, library_size="big"),
            match=r"`library_size` must be one number",
        ),
        Case(
            "library_size_wrong_length",
            generate(n_cells=3, library_size=[100.0, 200.0]),
            match=r"`library_size` must be one number or one per cell \(3\)",
        ),
        Case(
            "library_size_max",
            generate(n_cells=2, library_size=MAX_LIBRARY_SIZE),
            "correct",
            check=_check_n(2),
        ),
        Case(
            "library_size_500",
            generate(n_cells=8, library_size=500.0),
            "correct",
            check=_check_library,
        ),
        Case(
            "out_bad_suffix",
            _out_to("cells.csv"),
            match=r"Output path .*cells\.csv' must end in '\.h5ad' or '\.zarr'",
        ),
        Case(
            "out_existing_file",
            _out_to("cells.h5ad", make_file=True),
            error=(ValueError, TypeError, FileExistsError),
            match=r"exists.*(resume|another)",
        ),
        Case("out_streamed", _streamed, "correct", check=_check_streamed),
    ]
    guidance = [
        ("guidance_negative", -2.0),
        ("guidance_str", "high"),
        ("guidance_nan", float("nan")),
        ("guidance_inf", float("inf")),
        ("guidance_unknown_attr", {"tissue": 1.0}),
    ]
    if name not in GUIDED:
        no_cfg = r"no classifier-free guidance.*guidance=None"
        rows += [Case(n, generate(n_cells=2, guidance=g), match=no_cfg) for n, g in guidance]
        rows.append(Case("guidance_number", generate(n_cells=2, guidance=1.0), match=no_cfg))
    else:
        unknown = (
            r"one classifier-free guidance weight"
            if name == "DiscreteDiffusion"
            else r"unknown attributes \['tissue'\]"
        )
        matches = ["`guidance` must be"] * 4 + [unknown]
        rows += [
            Case(n, generate(n_cells=2, guidance=g), match=m)
            for (n, g), m in zip(guidance, matches, strict=True)
        ]
        rows.append(
            Case("guidance_zero", generate(n_cells=2, guidance=0.0), "correct", check=_check_n(2))
        )
    rows.append(
        Case("guidance_none", generate(n_cells=2, guidance=None), "correct", check=_check_n(2))
    )
    return rows
