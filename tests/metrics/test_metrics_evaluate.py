from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scvi_gen.metrics import AVAILABLE_METRICS, CommonSpace, evaluate, evaluate_table

EVAL_KWARGS = {"n_hvg": 100, "n_pcs": 10, "seed": 0}


def _value(df: pd.DataFrame, comparison: str, metric: str, scope: str = "global") -> float:
    row = df.query("comparison == @comparison and metric == @metric and scope == @scope")
    assert len(row) == 1, (comparison, metric, scope)
    return float(row["value"].iloc[0])


@pytest.fixture(scope="module")
def real_vs_real(
    train_adata: ad.AnnData, test_adata: ad.AnnData, real_synthetic_adata: ad.AnnData
) -> pd.DataFrame:
    return evaluate(train_adata, test_adata, real_synthetic_adata, "cell_type", **EVAL_KWARGS)


@pytest.fixture(scope="module")
def shifted(
    train_adata: ad.AnnData, test_adata: ad.AnnData, shifted_synthetic_adata: ad.AnnData
) -> pd.DataFrame:
    return evaluate(train_adata, test_adata, shifted_synthetic_adata, "cell_type", **EVAL_KWARGS)


def test_evaluate_returns_tidy_long_table(real_vs_real: pd.DataFrame) -> None:
    assert list(real_vs_real.columns) == ["comparison", "metric", "scope", "value"]
    assert set(real_vs_real["comparison"]) == {"synthetic", "floor"}
    assert set(real_vs_real["scope"]) == {"global", "per_label_mean"}
    assert real_vs_real.duplicated(["comparison", "metric", "scope"]).sum() == 0


def test_evaluate_reports_every_metric_for_both_comparisons(real_vs_real: pd.DataFrame) -> None:
    expected = {
        "wasserstein_1",
        "wasserstein_2",
        "mmd_rbf",
        "energy_distance",
        "c2st_auc",
        "prdc_precision",
        "prdc_recall",
        "prdc_density",
        "prdc_coverage",
        "gene_mean_corr",
        "gene_var_corr",
        "gene_zero_frac_corr",
        "gene_corr_error",
        "library_size_w1",
        "knn_label_accuracy",
        "de_logfc_corr",
    }
    for comparison in ("synthetic", "floor"):
        rows = real_vs_real[real_vs_real["comparison"] == comparison]
        assert set(rows.loc[rows["scope"] == "global", "metric"]) == expected


def test_label_metrics_are_global_only(real_vs_real: pd.DataFrame) -> None:
    per_label = real_vs_real[real_vs_real["scope"] == "per_label_mean"]
    assert not set(per_label["metric"]) & {"knn_label_accuracy", "de_logfc_corr"}


def test_real_sample_scores_near_floor(real_vs_real: pd.DataFrame) -> None:
    synthetic = _value(real_vs_real, "synthetic", "c2st_auc")
    floor = _value(real_vs_real, "floor", "c2st_auc")
    assert abs(synthetic - floor) < 0.12
    assert abs(synthetic - 0.5) < 0.15


def test_real_sample_recovers_labels_and_de(real_vs_real: pd.DataFrame) -> None:
    assert _value(real_vs_real, "synthetic", "knn_label_accuracy") > 0.9
    assert _value(real_vs_real, "synthetic", "de_logfc_corr") > 0.8


@pytest.mark.parametrize(
    "metric, worse",
    [
        ("c2st_auc", "higher"),
        ("wasserstein_1", "higher"),
        ("mmd_rbf", "higher"),
        ("energy_distance", "higher"),
        ("gene_mean_corr", "lower"),
    ],
)
def test_shifted_distribution_scores_worse_than_floor(
    shifted: pd.DataFrame, metric: str, worse: str
) -> None:
    synthetic = _value(shifted, "synthetic", metric)
    floor = _value(shifted, "floor", metric)
    assert synthetic > floor if worse == "higher" else synthetic < floor


def test_shifted_c2st_is_clearly_separable(shifted: pd.DataFrame) -> None:
    assert _value(shifted, "synthetic", "c2st_auc") > 0.8


def test_floor_does_not_depend_on_synthetic(
    real_vs_real: pd.DataFrame, shifted: pd.DataFrame
) -> None:
    floor_a = real_vs_real[real_vs_real["comparison"] == "floor"].reset_index(drop=True)
    floor_b = shifted[shifted["comparison"] == "floor"].reset_index(drop=True)
    pd.testing.assert_frame_equal(floor_a, floor_b)


def test_same_seed_gives_identical_dataframe(
    train_adata: ad.AnnData, test_adata: ad.AnnData, shifted_synthetic_adata: ad.AnnData
) -> None:
    kwargs = {**EVAL_KWARGS, "metrics": ["wasserstein_1", "c2st_auc", "prdc", "mmd_rbf"]}
    first = evaluate(train_adata, test_adata, shifted_synthetic_adata, "cell_type", **kwargs)
    second = evaluate(train_adata, test_adata, shifted_synthetic_adata, "cell_type", **kwargs)
    pd.testing.assert_frame_equal(first, second)
    assert first.attrs == second.attrs


def test_lognorm_synthetic_is_auto_detected_and_matches_counts(
    train_adata: ad.AnnData,
    test_adata: ad.AnnData,
    real_synthetic_adata: ad.AnnData,
    real_vs_real: pd.DataFrame,
    reference_log_cp10k,
) -> None:
    lognorm = ad.AnnData(
        reference_log_cp10k(real_synthetic_adata).astype(np.float32),
        obs=real_synthetic_adata.obs.copy(),
        var=real_synthetic_adata.var.copy(),
    )
    metrics = ["wasserstein_1", "gene_mean_corr", "library_size_w1"]
    df = evaluate(train_adata, test_adata, lognorm, "cell_type", metrics=metrics, **EVAL_KWARGS)
    assert df.attrs["synthetic_kind"] == "lognorm"
    assert np.isnan(_value(df, "synthetic", "library_size_w1"))
    assert np.isfinite(_value(df, "floor", "library_size_w1"))
    for metric in ("wasserstein_1", "gene_mean_corr"):
        assert _value(df, "synthetic", metric) == pytest.approx(
            _value(real_vs_real, "synthetic", metric), rel=1e-4
        )


def test_missing_genes_raise_clear_error(
    train_adata: ad.AnnData, test_adata: ad.AnnData, real_synthetic_adata: ad.AnnData
) -> None:
    synthetic = real_synthetic_adata[:, 3:].copy()
    with pytest.raises(ValueError, match="training genes missing from var_names: gene0"):
        evaluate(train_adata, test_adata, synthetic, "cell_type", metrics=["c2st_auc"])


def test_without_labels_reports_global_distribution_metrics_only(
    train_adata: ad.AnnData, test_adata: ad.AnnData, real_synthetic_adata: ad.AnnData
) -> None:
    df = evaluate(
        train_adata, test_adata, real_synthetic_adata, metrics=["energy_distance"], **EVAL_KWARGS
    )
    assert set(df["scope"]) == {"global"}
    assert set(df["metric"]) == {"energy_distance"}


def test_label_metric_without_labels_key_raises(
    train_adata: ad.AnnData, test_adata: ad.AnnData
) -> None:
    with pytest.raises(ValueError, match="need `labels_key`"):
        evaluate(train_adata, test_adata, test_adata, metrics=["knn_label_accuracy"])


def test_unknown_metric_raises(train_adata: ad.AnnData, test_adata: ad.AnnData) -> None:
    with pytest.raises(ValueError, match="Unknown metrics"):
        evaluate(train_adata, test_adata, test_adata, metrics=["fid"])


def test_missing_labels_are_dropped_from_label_metrics(
    train_adata: ad.AnnData, test_adata: ad.AnnData, real_synthetic_adata: ad.AnnData
) -> None:
    test = test_adata.copy()
    labels = test.obs["cell_type"].astype(object)
    labels.iloc[:20] = np.nan
    test.obs["cell_type"] = pd.Categorical(labels)
    df = evaluate(
        train_adata,
        test,
        real_synthetic_adata,
        "cell_type",
        metrics=["knn_label_accuracy", "de_logfc_corr", "energy_distance"],
        **EVAL_KWARGS,
    )
    assert df["value"].notna().all()
    assert sorted(df.attrs["per_label_labels"]) == ["alpha", "beta", "gamma"]


def test_synthetic_subsample_matches_floor_size(real_vs_real: pd.DataFrame) -> None:
    n_cells = real_vs_real.attrs["n_cells"]
    assert n_cells["synthetic"] == n_cells["floor"]
    assert n_cells["floor"] + n_cells["reference"] == 300


def test_mmd_bandwidths_are_recorded(real_vs_real: pd.DataFrame) -> None:
    bandwidths = real_vs_real.attrs["mmd_bandwidths"]
    assert len(bandwidths) == 4
    np.testing.assert_allclose(np.array(bandwidths) / bandwidths[1], [0.5, 1.0, 2.0, 4.0])
    assert set(real_vs_real.attrs["mmd_bandwidths_per_label"]) == {"alpha", "beta", "gamma"}


def test_reuses_a_fitted_common_space(
    train_adata: ad.AnnData,
    test_adata: ad.AnnData,
    real_synthetic_adata: ad.AnnData,
    real_vs_real: pd.DataFrame,
) -> None:
    space = CommonSpace(n_hvg=100, n_pcs=10, seed=0).fit(train_adata)
    df = evaluate(
        train_adata,
        test_adata,
        real_synthetic_adata,
        "cell_type",
        metrics=["wasserstein_1"],
        common_space=space,
        seed=0,
    )
    assert _value(df, "synthetic", "wasserstein_1") == pytest.approx(
        _value(real_vs_real, "synthetic", "wasserstein_1")
    )


def test_evaluate_table_has_ratio_to_floor(real_vs_real: pd.DataFrame) -> None:
    table = evaluate_table(real_vs_real)
    assert list(table.columns) == [
        "metric",
        "scope",
        "synthetic",
        "floor",
        "ratio_to_floor",
        "higher_is_better",
    ]
    assert len(table) == len(real_vs_real) // 2
    row = table[(table["metric"] == "c2st_auc") & (table["scope"] == "global")].iloc[0]
    assert row["ratio_to_floor"] == pytest.approx(row["synthetic"] / row["floor"])
    assert not row["higher_is_better"]


def test_available_metrics_cover_label_metrics() -> None:
    assert {"knn_label_accuracy", "de_logfc_corr", "prdc"} <= set(AVAILABLE_METRICS)


def test_label_missing_from_synthetic_warns_and_is_skipped_per_label(
    train_adata: ad.AnnData, test_adata: ad.AnnData, real_synthetic_adata: ad.AnnData
) -> None:
    synthetic = real_synthetic_adata[real_synthetic_adata.obs["cell_type"] != "gamma"].copy()
    with pytest.warns(UserWarning, match="too few"):
        df = evaluate(
            train_adata,
            test_adata,
            synthetic,
            "cell_type",
            metrics=["energy_distance"],
            **EVAL_KWARGS,
        )
    assert df.attrs["per_label_labels"] == ["alpha", "beta"]
    assert df.attrs["n_cells"]["synthetic"] == df.attrs["n_cells"]["floor"]


def test_per_label_means_use_the_labels_defined_for_every_comparison():
    from scvi_gen.metrics._evaluate import _shared_label_means

    scores = {
        "synthetic": [{"m": 0.2}, {"m": float("nan")}, {"m": 0.4}],
        "floor": [{"m": 0.6}, {"m": 0.9}, {"m": 0.8}],
    }
    rows = {r["comparison"]: r["value"] for r in _shared_label_means(scores)}
    assert rows == {"synthetic": pytest.approx(0.3), "floor": pytest.approx(0.7)}


def test_nan_in_synthetic_is_named(
    train_adata: ad.AnnData, test_adata: ad.AnnData, real_synthetic_adata: ad.AnnData
) -> None:
    synthetic = real_synthetic_adata.copy()
    synthetic.X = np.asarray(
        synthetic.X.toarray() if hasattr(synthetic.X, "toarray") else synthetic.X, dtype=np.float32
    )
    synthetic.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="synthetic.X contains NaN"):
        evaluate(train_adata, test_adata, synthetic, "cell_type", metrics=["c2st_auc"])


def test_non_integer_counts_read_as_lognorm_warn(
    train_adata: ad.AnnData, test_adata: ad.AnnData, real_synthetic_adata: ad.AnnData
) -> None:
    # Expected counts from a model are not integers, but are no log1p(CP10k) values either.
    synthetic = real_synthetic_adata.copy()
    dense = synthetic.X.toarray() if hasattr(synthetic.X, "toarray") else synthetic.X
    synthetic.X = np.asarray(dense, dtype=np.float32) * 50.5
    with pytest.warns(UserWarning, match="synthetic_kind='counts'"):
        evaluate(train_adata, test_adata, synthetic, "cell_type", metrics=["gene_mean_corr"])


@pytest.mark.parametrize("n_synthetic", [0, 1, 3])
def test_too_few_synthetic_cells_are_refused_naming_synthetic(
    train_adata: ad.AnnData, test_adata: ad.AnnData, n_synthetic: int
) -> None:
    # Fewer than the test-set minimum would give "global" scores of one or two points.
    synthetic = test_adata[:n_synthetic].copy()
    with pytest.raises(
        ValueError, match=rf"`synthetic` needs at least 4 cells.*got {n_synthetic}"
    ):
        evaluate(train_adata, test_adata, synthetic, "cell_type", **EVAL_KWARGS)


def test_too_few_test_cells_are_refused_naming_test(
    train_adata: ad.AnnData, test_adata: ad.AnnData
) -> None:
    with pytest.raises(ValueError, match=r"`test` needs at least 4 cells to be split, got 1"):
        evaluate(train_adata, test_adata[:1].copy(), test_adata, "cell_type", **EVAL_KWARGS)
