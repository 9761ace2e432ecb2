from __future__ import annotations

from scvi_gen.benchmark import (
    FLOOR,
    TrainTestConfig,
    drop_unlabelled,
    run_train_test,
    split_for_seed,
)
from tests.conftest import make_counts_adata


def test_run_train_test_scores_floor_and_generator_per_seed():
    adata = make_counts_adata(n_cells=200, n_genes=40)
    config = TrainTestConfig(
        n_top_genes=0,
        n_pcs=5,
        overrides={
            "scvi": {
                "train": {"max_epochs": 2, "early_stopping": False, "enable_progress_bar": False}
            }
        },
    )
    results = run_train_test(adata, ["scvi"], seeds=[0, 1], config=config)
    assert set(results["generator"]) == {FLOOR, "scvi"}
    assert set(results["seed"]) == {0, 1}
    timing = results[results["scope"] == "time"]
    assert set(timing["metric"]) == {"train_s", "generate_s"}
    assert "obs_names" not in adata.obs  # the caller's data is untouched
    assert "_scvi_labels" not in adata.obs


def test_drop_unlabelled_removes_missing_labels_and_keeps_the_input():
    adata = make_counts_adata(n_cells=30, n_genes=10)
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(object)
    adata.obs.iloc[:4, adata.obs.columns.get_loc("cell_type")] = None
    labelled = drop_unlabelled(adata, "cell_type")
    assert labelled.n_obs == 26
    assert labelled.obs["cell_type"].notna().all()
    assert adata.obs["cell_type"].isna().sum() == 4


def test_split_for_seed_keeps_the_same_genes_in_both_sets():
    adata = make_counts_adata(n_cells=120, n_genes=40)
    train, test = split_for_seed(adata, TrainTestConfig(n_top_genes=15), seed=0)
    assert train.n_vars == test.n_vars == 15
    assert list(train.var_names) == list(test.var_names)
    assert train.n_obs + test.n_obs == adata.n_obs
    again, _ = split_for_seed(adata, TrainTestConfig(n_top_genes=15), seed=0)
    assert list(again.obs_names) == list(train.obs_names)
