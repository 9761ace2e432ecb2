from __future__ import annotations

import pytest

from scvi_gen.benchmark import guidance_sweep
from scvi_gen.model.cfgen import CFGen
from tests.conftest import make_counts_adata


@pytest.fixture(scope="module")
def model_and_split():
    import scvi

    scvi.settings.seed = 0
    adata = make_counts_adata(n_cells=160, n_genes=40)
    train, test = adata[:120].copy(), adata[120:].copy()
    CFGen.setup_anndata(train, labels_key="cell_type")
    model = CFGen(train, n_latent=4, encoder_hidden=(16,), decoder_hidden=(16,), flow_hidden=16)
    model.train(max_epochs=3, batch_size=64, enable_progress_bar=False)
    return model, train, test


def test_guidance_sweep_scores_every_weight(model_and_split):
    model, train, test = model_and_split
    table = guidance_sweep(
        model,
        train,
        test,
        weights=[0.0, 2.0, {"cell_type": 1.5}],
        labels_key="cell_type",
        n_hvg=30,
        n_pcs=5,
        metrics=["mmd_rbf", "knn_label_accuracy"],
        per_label=False,
    )
    assert list(table["guidance"].unique()) == [0.0, 2.0, '{"cell_type": 1.5}']
    synthetic = table[table["comparison"] == "synthetic"]
    assert set(synthetic["metric"]) == {"mmd_rbf", "knn_label_accuracy"}
    assert synthetic["value"].notna().all()


def test_guidance_sweep_needs_weights(model_and_split):
    model, train, test = model_and_split
    with pytest.raises(ValueError, match="at least one"):
        guidance_sweep(model, train, test, weights=[], labels_key="cell_type")
