"""Per-model rows of the bad-input matrix: saved model files and new data given to a model.

Each file case edits a fresh copy of the model's saved directory (``ctx.saved_copy()``) and
loads it; a clear error names the file and the key. See :mod:`tests.bad_input_cases`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch

from scvi_gen.base._model_files import declared_fitted_state
from tests.bad_input_cases import LOOKUP_ERRORS, USER_ERRORS, Case, ModelContext, check_cells

META, WEIGHTS, LEGACY = "model_meta.json", "model.safetensors", "model_state.pt"


class Payload:
    """A pickle that creates ``target`` when unpickled (stands for any code)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.target,))


def _load_edited(edit: Any) -> Any:
    """A run that edits the JSON metadata of a saved copy, then loads it."""

    def run(ctx: ModelContext) -> Any:
        path = ctx.saved_copy()
        meta = json.loads((path / META).read_text())
        edit(meta, ctx)
        (path / META).write_text(json.dumps(meta))
        return ctx.cls.load(path)

    return run


def _set_attr(name: str, value: Any) -> Any:
    return lambda meta, ctx: meta["attrs"].__setitem__(name, value)


def _unknown_name(cls: type) -> str:
    """``genes_``, or another name where the class fits state under that name (flows)."""
    return "genes_" if "genes_" not in declared_fitted_state(cls) else "all_genes_"


def _fitted_genes(meta: dict, ctx: ModelContext) -> None:
    # Plain JSON data under a name the model neither defines nor has when built.
    meta["attrs"][_unknown_name(ctx.cls)] = [str(g) for g in ctx.adata.var_names]


def _declared_cases(cls: type) -> list[Case]:
    """The fitted state a class declares: a value of another kind, or none, is refused."""
    rows = []
    for name, kind in declared_fitted_state(cls).items():
        wrong = "x" if kind != "str" else 1
        rows += [
            Case(
                f"meta_{name}wrong_kind",
                _load_edited(_set_attr(name, {"a": wrong})),
                match=rf"'attrs\.{name}' must be .* got an object",
            ),
            Case(
                f"meta_{name}missing",
                _load_edited(lambda m, c, n=name: m["attrs"].pop(n)),
                match=rf"'attrs\.{name}' is missing.*fits it from the data",
            ),
        ]
    return rows


def _init_arg(key: str, value: Any) -> Any:
    return lambda meta, ctx: meta["attrs"]["init_params_"]["non_kwargs"].__setitem__(key, value)


def _first_init_arg(meta: dict) -> str:
    return next(iter(meta["attrs"]["init_params_"]["non_kwargs"]))


def _wrong_init_type(meta: dict, ctx: ModelContext) -> None:
    meta["attrs"]["init_params_"]["non_kwargs"][_first_init_arg(meta)] = {"not": "an arg"}


def _drop_gene(meta: dict, ctx: ModelContext) -> None:
    names = meta["var_names"]
    names["data"], names["shape"] = names["data"][1:], [len(names["data"]) - 1]


def _reverse_genes(meta: dict, ctx: ModelContext) -> None:
    meta["var_names"]["data"] = meta["var_names"]["data"][::-1]


def _rewrite(text: Any) -> Any:
    def run(ctx: ModelContext) -> Any:
        path = ctx.saved_copy()
        original = (path / META).read_text()
        (path / META).write_text(text(original))
        return ctx.cls.load(path)

    return run


def _edit_weights(edit: Any) -> Any:
    def run(ctx: ModelContext) -> Any:
        from safetensors.torch import load_file, save_file

        path = ctx.saved_copy()
        state = load_file(path / WEIGHTS)
        edit(state)
        save_file(state, path / WEIGHTS)
        return ctx.cls.load(path)

    return run


def _first(state: dict) -> str:
    return next(iter(state))


def _bytes(edit: Any) -> Any:
    def run(ctx: ModelContext) -> Any:
        path = ctx.saved_copy()
        data = (path / WEIGHTS).read_bytes()
        (path / WEIGHTS).write_bytes(edit(data))
        return ctx.cls.load(path)

    return run


def _pickle_payload(ctx: ModelContext) -> Any:
    path = ctx.saved_copy()
    target = path.parent / "payload_ran"
    (path / WEIGHTS).unlink()
    torch.save({"w": Payload(target)}, path / LEGACY)
    try:
        return ctx.cls.load(path)
    finally:
        assert not target.exists(), "the pickle payload ran"


def _legacy_pt(ctx: ModelContext) -> Any:
    from safetensors.torch import load_file

    path = ctx.saved_copy()
    torch.save(load_file(path / WEIGHTS), path / LEGACY)
    (path / WEIGHTS).unlink()
    return ctx.cls.load(path)


def _check_loaded(model: Any, ctx: ModelContext) -> None:
    a = model.generate(5, seed=4, progress_bar=False)
    b = ctx.model.generate(5, seed=4, progress_bar=False)
    check_cells(a, ctx, 5, model=model)
    assert (a.X != b.X).nnz == 0, "the loaded model generates other cells"


def _fresh_data(ctx: ModelContext) -> ad.AnnData:
    """Data set up like the training data (same genes, labels): a copy of it."""
    adata = ctx.adata.copy()
    adata.uns = {}
    return adata


def _reordered(ctx: ModelContext) -> ad.AnnData:
    adata = _fresh_data(ctx)
    return adata[:, adata.var_names[::-1]].copy()


def _missing_gene(ctx: ModelContext) -> ad.AnnData:
    adata = _fresh_data(ctx)
    return adata[:, adata.var_names[1:]].copy()


def _nan_values(ctx: ModelContext) -> ad.AnnData:
    adata = _fresh_data(ctx)
    values = adata.X.toarray()
    values[0, 0] = np.nan
    adata.X = sp.csr_matrix(values)
    return adata


def _unknown_label(ctx: ModelContext) -> ad.AnnData:
    adata = _fresh_data(ctx)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    labels[0] = "never_seen"
    adata.obs["cell_type"] = labels
    return adata


def _load_with(make: Any) -> Any:
    return lambda ctx: ctx.cls.load(ctx.saved_copy(), adata=make(ctx))


def file_cases(cls: type) -> list[Case]:
    """Tampered, truncated and foreign saved files; loading with data."""
    edited = r"model_meta\.json: 'attrs\.{}'.*(re-save|retrain)"
    resave = r"(re-save|retrain)"
    rows = [
        Case(
            "load_untouched",
            lambda ctx: ctx.cls.load(ctx.saved_copy()),
            "correct",
            check=_check_loaded,
        ),
        Case("load_legacy_pt", _legacy_pt, "correct", check=_check_loaded),
        Case(
            "meta_module_replaced",
            _load_edited(_set_attr("module", "x")),
            match=edited.format("module"),
        ),
        Case(
            "meta_private_attr",
            _load_edited(_set_attr("_secret_", 1)),
            match=edited.format("_secret_"),
        ),
        Case(
            "meta_method_attr",
            _load_edited(_set_attr("generate_", 1)),
            match=edited.format("generate_"),
        ),
        Case(
            "meta_unknown_attr",
            _load_edited(_fitted_genes),
            match=edited.format(_unknown_name(cls)).replace(".*", " is not state .* saves.*"),
        ),
        Case(
            "meta_library_null",
            _load_edited(_set_attr("library_size_model_", None)),
            match=edited.format("library_size_model_"),
        ),
        Case(
            "meta_library_str",
            _load_edited(_set_attr("library_size_model_", "x")),
            match=edited.format("library_size_model_"),
        ),
        Case(
            "meta_conditions_null",
            _load_edited(_set_attr("training_conditions_", None)),
            match=edited.format("training_conditions_"),
        ),
        Case(
            "meta_is_trained_str",
            _load_edited(_set_attr("is_trained_", "yes")),
            match=edited.format("is_trained_") + r"|'attrs\.is_trained_' must be a boolean",
        ),
        Case(
            "meta_unknown_init_kw",
            _load_edited(_init_arg("bogus", 1)),
            match=r"'attrs\.init_params_\.non_kwargs\.bogus': \w+\(\) has no parameter",
        ),
        Case(
            "meta_init_wrong_type",
            _load_edited(_wrong_init_type),
            match=r"model_meta\.json.*init_params_.*re-save",
        ),
        Case(
            "meta_registry_method",
            _load_edited(
                lambda m, c: m["attrs"]["registry_"].__setitem__("setup_method_name", "__init__")
            ),
            match=r"setup_method_name' is '__init__'.*" + resave,
        ),
        Case(
            "meta_registry_missing",
            _load_edited(lambda m, c: m["attrs"].pop("registry_")),
            match=r"'attrs\.registry_' must be a JSON object",
        ),
        Case(
            "meta_var_names_one_removed",
            _load_edited(_drop_gene),
            match=r"'var_names' has \d+ genes but the model was set up with \d+",
        ),
        Case(
            "meta_var_names_reordered",
            _load_edited(_reverse_genes),
            match=r"model_meta\.json.*'var_names'.*" + resave,
        ),
        Case(
            "meta_format",
            _load_edited(lambda m, c: m.__setitem__("format", 99)),
            match=r"'format' is 99",
        ),
        Case(
            "meta_extra_key",
            _load_edited(lambda m, c: m.__setitem__("extra", 1)),
            match=r"unknown key 'extra'",
        ),
        Case(
            "meta_missing_key",
            _load_edited(lambda m, c: m.pop("attrs")),
            match=r"missing key 'attrs'",
        ),
        Case(
            "meta_model_not_str",
            _load_edited(lambda m, c: m.__setitem__("model", ["X"])),
            match=r"'model' must name",
        ),
        Case(
            "meta_other_model",
            _load_edited(lambda m, c: m.__setitem__("model", "Other")),
            match=r"holds a Other model; load it with that class",
        ),
        Case(
            "meta_truncated",
            _rewrite(lambda t: t[: len(t) // 2]),
            match=r"model_meta\.json is not a valid saved scvi-gen model.*" + resave,
        ),
        Case(
            "meta_not_object",
            _rewrite(lambda t: "[1, 2]"),
            match=r"model_meta\.json is not a valid saved scvi-gen model",
        ),
        Case(
            "meta_not_utf8",
            lambda ctx: _write_bytes_meta(ctx, b"\xff\xfe\x00garbage"),
            match=r"model_meta\.json is not a valid saved scvi-gen model",
        ),
        Case(
            "weights_extra_key",
            _edit_weights(lambda s: s.__setitem__("x.weight", torch.ones(2))),
            match=r"model\.safetensors: unexpected weight 'x\.weight'",
        ),
        Case(
            "weights_missing_key",
            _edit_weights(lambda s: s.pop(_first(s))),
            match=r"model\.safetensors: weight '[^']+' is missing",
        ),
        Case(
            "weights_wrong_shape",
            _edit_weights(lambda s: s.__setitem__(_first(s), torch.zeros(*s[_first(s)].shape, 2))),
            match=r"model\.safetensors: weight '[^']+' has shape",
        ),
        Case(
            "weights_truncated",
            _bytes(lambda d: d[: len(d) // 2]),
            match=r"model\.safetensors is not a readable weights file.*truncated",
        ),
        Case(
            "weights_garbage",
            _bytes(lambda d: b"\x00" * 64),
            match=r"model\.safetensors is not a readable weights file",
        ),
        Case(
            "weights_pickle_payload",
            _pickle_payload,
            match=r"model_state\.pt holds more than tensors.*not loaded",
        ),
        Case(
            "load_missing_dir",
            lambda ctx: ctx.cls.load(ctx.fresh() / "nothing"),
            error=(FileNotFoundError,),
            match=r"No saved scvi-gen model in .*model_meta\.json",
        ),
        Case(
            "load_device_gpu",
            lambda ctx: ctx.cls.load(ctx.saved_copy(), device="gpu"),
            match=r"`device`|device 'gpu'",
        ),
        Case(
            "load_adata_reordered",
            _load_with(_reordered),
            match=r"genes of this AnnData don't match.*another order.*reorder",
        ),
        Case(
            "load_adata_missing_gene",
            _load_with(_missing_gene),
            match=r"genes of this AnnData don't match.*1 missing.*lacks genes",
        ),
        Case(
            "load_adata_nan",
            _load_with(_nan_values),
            match=r"adata\.X contains NaN or infinite values",
        ),
        Case(
            "load_adata_unknown_label",
            _load_with(_unknown_label),
            error=LOOKUP_ERRORS,
            match=r"never_seen",
        ),
        Case("load_adata_same", _load_with(_fresh_data), "correct", check=_check_loaded),
        *_declared_cases(cls),
    ]
    return rows


def _write_bytes_meta(ctx: ModelContext, data: bytes) -> Any:
    path = ctx.saved_copy()
    (path / META).write_bytes(data)
    return ctx.cls.load(path)


def new_data_reader(cls: type) -> str | None:
    """The method of ``cls`` that reads new cells (None for models without one)."""
    for name in ("get_latent_representation", "log_prob", "impute"):
        if callable(getattr(cls, name, None)):
            return name
    return None


def _read_new(make: Any) -> Any:
    def run(ctx: ModelContext) -> Any:
        return getattr(ctx.model, new_data_reader(ctx.cls))(make(ctx))

    return run


def _check_read(result: Any, ctx: ModelContext) -> None:
    n = ctx.adata.n_obs
    if isinstance(result, ad.AnnData):
        # imputed entries are count-scale expectations, not rounded (impute's contract)
        check_cells(result, ctx, n, var_names=ctx.adata.var_names, integer=False)
        return
    values = np.asarray(result)
    assert values.shape[0] == n and np.all(np.isfinite(values)), "not one finite row per cell"


def _check_same_latent(result: Any, ctx: ModelContext) -> None:
    _check_read(result, ctx)
    expected = ctx.model.get_latent_representation(_fresh_data(ctx))
    assert np.allclose(result, expected, atol=1e-5), "gene order changed the latent"


#: Models whose encoder reads genes by identity (gene tokens): any order or subset is valid.
GENE_ORDER_INVARIANT = ("LatentDiffusion",)


def _gene_layout_cases(cls: type) -> list[Case]:
    if cls.__name__ in GENE_ORDER_INVARIANT:
        return [
            Case(
                "new_data_reordered_genes",
                _read_new(_reordered),
                "correct",
                check=_check_same_latent,
            ),
            Case("new_data_missing_gene", _read_new(_missing_gene), "correct", check=_check_read),
        ]
    return [
        Case(
            "new_data_reordered_genes",
            _read_new(_reordered),
            match=r"genes of this AnnData don't match the model's genes.*another order",
        ),
        Case(
            "new_data_missing_gene",
            _read_new(_missing_gene),
            match=r"genes of this AnnData don't match the model's genes.*1 missing",
        ),
    ]


def new_data_cases(cls: type) -> list[Case]:
    """New cells given to a trained model's reader (encoder, log-density, imputation)."""
    if new_data_reader(cls) is None:
        return []
    return [
        *_gene_layout_cases(cls),
        Case("new_data_nan", _read_new(_nan_values), match=r"adata\.X contains NaN"),
        Case(
            "new_data_unknown_label",
            _read_new(_unknown_label),
            error=LOOKUP_ERRORS,
            match=r"never_seen",
        ),
        Case(
            "new_data_not_anndata",
            _read_new(lambda ctx: ctx.adata.X),
            error=USER_ERRORS,
            match=r"`adata` must be an AnnData.*got csr_matrix.*anndata\.AnnData\(X",
        ),
        Case("new_data_same_genes", _read_new(_fresh_data), "correct", check=_check_read),
    ]
