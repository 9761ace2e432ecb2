from __future__ import annotations

from scvi_gen.benchmark import FLOOR, TrainTestConfig, run_train_test
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
