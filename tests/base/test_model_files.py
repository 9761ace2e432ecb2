"""Saved model files are untrusted: every edit, truncation or payload is refused by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from scvi_gen.baselines import SCVIGenerator
from scvi_gen.model.cfgen import CFGen
from tests.conftest import make_counts_adata

#: Tiny networks and one epoch each, as in tests/test_contract.py.
_MODELS = {
    "scvi": (SCVIGenerator, {"n_hidden": 16, "n_latent": 4}, {"max_epochs": 1}),
    "cfgen": (
        CFGen,
        {"n_latent": 4, "encoder_hidden": (16,), "decoder_hidden": (16,), "flow_hidden": 16},
        {"max_epochs_autoencoder": 1, "max_epochs_flow": 1},
    ),
}
META, WEIGHTS, LEGACY = "model_meta.json", "model.safetensors", "model_state.pt"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One tiny trained model of each kind, saved once: ``{name: (model, directory)}``."""
    import scvi

    torch.set_num_threads(1)
    out = {}
    for name, (cls, init, train) in _MODELS.items():
        scvi.settings.seed = 0
        adata = make_counts_adata(n_cells=60, n_genes=12)
        cls.setup_anndata(adata, labels_key="cell_type")
        model = cls(adata, **init)
        model.train(**train, enable_progress_bar=False)
        path = tmp_path_factory.mktemp(name) / "model"
        model.save(path)
        out[name] = (model, path)
    return out


@pytest.fixture(params=list(_MODELS))
def copy(request, saved, tmp_path):
    """``(model class, original model, a fresh copy of its saved directory)``."""
    model, path = saved[request.param]
    target = tmp_path / "model"
    shutil.copytree(path, target)
    return _MODELS[request.param][0], model, target


def _edit_meta(path: Path, edit) -> Path:
    meta = json.loads((path / META).read_text())
    edit(meta)
    (path / META).write_text(json.dumps(meta))
    return path / META


def _edit_weights(path: Path, edit) -> Path:
    state = load_file(path / WEIGHTS)
    edit(state)
    save_file(state, path / WEIGHTS)
    return path / WEIGHTS


def _same_cells(a, b) -> None:
    np.testing.assert_array_equal(
        a.generate(6, seed=1).X.toarray(), b.generate(6, seed=1).X.toarray()
    )


class _Payload:
    """A pickle that creates ``target`` when unpickled (stands for any code)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


# ----------------------------------------------------------------- untouched saves
def test_untouched_save_is_safetensors_and_gives_identical_cells(copy):
    cls, model, path = copy
    assert (path / WEIGHTS).exists() and not (path / LEGACY).exists()
    _same_cells(model, cls.load(path))


def test_older_pt_saves_still_load(copy):
    cls, model, path = copy
    torch.save(load_file(path / WEIGHTS), path / LEGACY)
    (path / WEIGHTS).unlink()
    _same_cells(model, cls.load(path))


# ----------------------------------------------------------------- tampered metadata
def _set_attr(name, value):
    return lambda meta: meta["attrs"].__setitem__(name, value)


def _drop_one_gene(meta):
    names = meta["var_names"]
    names["data"], names["shape"] = names["data"][1:], [len(names["data"]) - 1]


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        (_set_attr("module", "x"), ValueError, r"'attrs\.module' is not fitted model state"),
        (_set_attr("_secret_", 1), ValueError, r"'attrs\._secret_'"),
        (_set_attr("library_size_model_", None), ValueError, r"'attrs\.library_size_model_'"),
        (_set_attr("library_size_model_", "x"), TypeError, r"'attrs\.library_size_model_'"),
        (_set_attr("training_conditions_", None), ValueError, r"'attrs\.training_conditions_'"),
        (_set_attr("is_trained_", "yes"), TypeError, r"'attrs\.is_trained_' must be a boolean"),
        (
            lambda m: m["attrs"]["init_params_"]["non_kwargs"].__setitem__("bogus", 1),
            ValueError,
            r"'attrs\.init_params_\.non_kwargs\.bogus': \w+\(\) has no parameter 'bogus'",
        ),
        (
            lambda m: m["attrs"]["registry_"].__setitem__("setup_method_name", "__init__"),
            ValueError,
            r"setup_method_name' is '__init__'",
        ),
        (
            lambda m: m["attrs"]["init_params_"]["non_kwargs"].__setitem__("n_latent", "four"),
            TypeError,
            r"building a \w+ from 'attrs\.init_params_' failed",
        ),
        (_drop_one_gene, ValueError, r"'var_names' has 11 genes but the model was set up with 12"),
        (lambda m: m.__setitem__("format", 99), ValueError, r"'format' is 99"),
        (lambda m: m.__setitem__("extra", 1), ValueError, r"unknown key 'extra'"),
        (lambda m: m.__setitem__("model", ["CFGen"]), TypeError, r"'model' must name"),
    ],
)
def test_edited_metadata_is_refused_naming_file_and_key(copy, edit, error, match):
    cls, _, path = copy
    meta = _edit_meta(path, edit)
    with pytest.raises(error, match=match) as info:
        cls.load(path)
    assert str(meta) in str(info.value)


def test_truncated_metadata_names_the_file(copy):
    cls, _, path = copy
    text = (path / META).read_text()
    (path / META).write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="is not a valid saved scvi-gen model") as info:
        cls.load(path)
    assert str(path / META) in str(info.value)


# ----------------------------------------------------------------- tampered weights
def _first_key(state):
    return next(iter(state))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda s: s.__setitem__("extra.weight", torch.zeros(2)),
            r"unexpected weight 'extra\.weight'",
        ),
        (lambda s: s.pop(_first_key(s)), r"weight '[^']+' is missing"),
        (
            lambda s: s.__setitem__(_first_key(s), torch.zeros(*s[_first_key(s)].shape, 2)),
            r"weight '[^']+' has shape",
        ),
    ],
)
def test_weights_with_other_keys_or_shapes_are_refused(copy, edit, match):
    cls, _, path = copy
    weights = _edit_weights(path, edit)
    with pytest.raises(ValueError, match=match) as info:
        cls.load(path)
    assert str(weights) in str(info.value)


def test_truncated_weights_are_refused(copy):
    cls, _, path = copy
    data = (path / WEIGHTS).read_bytes()
    (path / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable weights file"):
        cls.load(path)


def test_pickle_payload_is_refused_and_never_runs(copy, tmp_path):
    cls, _, path = copy
    # The payload is live: unpickling it without weights_only creates its file.
    control = tmp_path / "control"
    torch.save({"w": _Payload(control)}, tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert control.exists()

    target = tmp_path / "pwned"
    (path / WEIGHTS).unlink()
    torch.save({"w": _Payload(target)}, path / LEGACY)
    with pytest.raises(ValueError, match="holds more than tensors") as info:
        cls.load(path)
    assert str(path / LEGACY) in str(info.value)
    assert not target.exists()
