"""Nothing of the user's data changes: setup, train, generate, save and load leave it as it was.

scvi-tools' registration adds its own bookkeeping (listed in ``SCVI_KEYS``); everything else
of ``X``, ``layers``, ``obs``, ``var``, ``obsm`` and ``uns`` must hash the same afterwards.
"""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from scvi_gen.model._registry import GENERATORS
from tests.conftest import make_counts_adata
from tests.generators import NAMES, TINY, _one_epoch

#: What scvi-tools' setup writes into a registered AnnData (uns and obs columns).
SCVI_KEYS = ("_scvi_uuid", "_scvi_manager_uuid", "_scvi_adata_minify_type")


def _digest(value) -> str:
    if sp.issparse(value):
        value = sp.csr_matrix(value)
        parts = [value.data, value.indices, value.indptr, np.asarray(value.shape)]
        return hashlib.sha256(
            b"".join(np.ascontiguousarray(p).tobytes() for p in parts)
        ).hexdigest()
    if isinstance(value, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
    return hashlib.sha256(pickle.dumps(value)).hexdigest()


def _fingerprint(adata) -> dict[str, str]:
    obs = adata.obs.loc[:, [c for c in adata.obs.columns if not str(c).startswith("_scvi")]]
    uns = {k: v for k, v in adata.uns.items() if k not in SCVI_KEYS}
    return {
        "X": _digest(adata.X),
        "layers": _digest({k: _digest(v) for k, v in adata.layers.items()}),
        "obs": _digest(obs),
        "obs_names": _digest(list(adata.obs_names)),
        "var": _digest(adata.var),
        "obsm": _digest(
            {k: _digest(v) for k, v in adata.obsm.items() if not str(k).startswith("_scvi")}
        ),
        "uns": _digest(uns),
    }


@pytest.mark.parametrize("name", NAMES)
def test_setup_train_generate_save_load_leave_the_data_as_it_was(name, tmp_path):
    import scvi

    spec = GENERATORS[name]
    try:
        cls = spec.model_class()
    except ImportError as err:
        pytest.skip(f"{name}: {err}")
    adata = make_counts_adata(n_cells=90, n_genes=20)
    adata.layers["counts"] = adata.X.copy()
    adata.obsm["X_pca"] = np.random.default_rng(0).normal(size=(adata.n_obs, 3))
    adata.uns["note"] = {"kept": [1, 2, 3]}
    before = _fingerprint(adata)
    scvi.settings.seed = 0
    cls.setup_anndata(adata, layer="counts", labels_key="cell_type", **spec.setup_kwargs)
    model = cls(adata, **{**spec.init_kwargs, **TINY.get(cls.__name__, {})})
    model.train(**{**spec.train_kwargs, **_one_epoch(cls)})
    model.generate(5, seed=0)
    model.save(tmp_path / "model")
    cls.load(tmp_path / "model", adata=adata)
    assert _fingerprint(adata) == before
