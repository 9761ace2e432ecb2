from __future__ import annotations

import numpy as np
import pytest
import torch

from scvi_gen.model.flows import ActNorm, MoECoupling, MOEFlow
from tests.conftest import make_counts_adata

SMALL = {
    "n_blocks": 2,
    "hidden_features": (32,),
    "passes": 4,
    "n_groups": 4,
    "token_dim": 20,
    "embedding_dim": 4,
    "act_norm": True,
}


@pytest.fixture(scope="module")
def trained():
    adata = make_counts_adata(n_cells=120, n_genes=24)
    MOEFlow.setup_anndata(adata, labels_key="cell_type", batch_key="batch")
    model = MOEFlow(adata, **SMALL)
    model.train(max_epochs=2, batch_size=40, enable_progress_bar=False)
    return adata, model


def test_architecture_has_published_defaults():
    adata = make_counts_adata(n_cells=30, n_genes=12)
    MOEFlow.setup_anndata(adata, labels_key="cell_type")
    model = MOEFlow(adata)
    couplings = [m for m in model.module.layers if isinstance(m, MoECoupling)]
    assert len(couplings) == 2
    experts = couplings[0].conditioner.experts
    assert len(experts) == 4 and experts[0].attention.num_heads == 10


def test_actnorm_layers_are_initialised_by_training(trained):
    _, model = trained
    norms = [m for m in model.module.layers if isinstance(m, ActNorm)]
    assert len(norms) == 4
    assert all(bool(m.initialized) for m in norms)
    assert any(m.log_scale.abs().max() > 0.01 for m in norms)


def test_actnorm_layers_are_initialised_with_the_data_state_before_training():
    adata = make_counts_adata(n_cells=60, n_genes=12)
    MOEFlow.setup_anndata(adata, labels_key="cell_type")
    model = MOEFlow(adata, **SMALL)
    norms = [m for m in model.module.layers if isinstance(m, ActNorm)]
    assert bool(model.module.initialized) and all(bool(m.initialized) for m in norms)
    assert all(m.log_scale.abs().max() > 0.01 for m in norms[:1])


def test_data_dependent_init_standardises_first_batch():
    adata = make_counts_adata(n_cells=60, n_genes=12)
    MOEFlow.setup_anndata(adata, labels_key="cell_type")
    manager = MOEFlow._get_most_recent_anndata_manager(adata, required=True)
    # Built from the registry: no data state yet, so the ActNorm layers are not initialised.
    module = MOEFlow(None, registry=manager.registry, **SMALL).module
    z = torch.randn(64, 12) * 3 + 2
    c = module.context({"labels": torch.randint(0, 3, (64, 1))}, torch.full((64, 1), 500.0))
    module.data_dependent_init(z, c)
    with torch.no_grad():
        for layer in module.layers:
            if isinstance(layer, ActNorm):
                out = layer(c)(z)
                assert torch.allclose(out.mean(0), torch.zeros(12), atol=1e-4)
                assert torch.allclose(out.var(0, unbiased=False), torch.ones(12), atol=1e-3)
            z = layer(c)(z)


def test_generated_values_are_never_negative(trained):
    _, model = trained
    syn = model.generate(labels={"type0": 20, "type1": 20}, seed=0, progress_bar=False)
    assert syn.X.min() >= 0 and syn.X.nnz > 0
    assert list(syn.var_names) == model.genes_


def test_save_load_gives_identical_samples(trained, tmp_path):
    adata, model = trained
    model.save(tmp_path / "moe")
    loaded = MOEFlow.load(tmp_path / "moe")
    a = model.generate(labels={"type2": 15}, seed=11, progress_bar=False)
    b = loaded.generate(labels={"type2": 15}, seed=11, progress_bar=False)
    assert (a.X != b.X).nnz == 0
    assert np.allclose(model.log_prob(adata), loaded.log_prob(adata), atol=1e-4)
