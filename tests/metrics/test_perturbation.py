"""Known answers of the perturbation metrics."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scvi_gen.metrics import (
    CommonSpace,
    deg_jaccard,
    jaccard,
    mean_expression_r2,
    mean_log_expression,
    perturbation_scores,
    relative_energy_distance,
    top_degs,
)
from scvi_gen.preprocessing import log1p_cp10k


def _counts(mean: np.ndarray, n: int, seed: int) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    X = rng.poisson(mean, size=(n, len(mean))).astype(np.float32)
    adata = ad.AnnData(sp.csr_matrix(X))
    adata.var_names = [f"g{j}" for j in range(len(mean))]
    adata.obs_names = [f"s{seed}_c{i}" for i in range(n)]
    return adata


@pytest.fixture(scope="module")
def ctrl_stim() -> tuple[ad.AnnData, ad.AnnData]:
    base = np.full(40, 5.0)
    up = base.copy()
    up[:10] = 60.0  # the first ten genes respond strongly
    return _counts(base, 60, 0), _counts(up, 60, 1)


def test_mean_log_expression_known_value() -> None:
    adata = ad.AnnData(np.array([[1.0, 3.0], [2.0, 2.0]]))
    expected = np.log1p([[2500.0, 7500.0], [5000.0, 5000.0]]).mean(0)
    np.testing.assert_allclose(mean_log_expression(adata).to_numpy(), expected, rtol=1e-6)


def test_r2_is_one_on_identical_and_affine_means() -> None:
    real = pd.Series(np.arange(10.0), index=[f"g{i}" for i in range(10)])
    assert mean_expression_r2(real, real) == 1.0
    assert mean_expression_r2(3 * real - 2, real) == pytest.approx(1.0)


def test_r2_known_value() -> None:
    # x = (0, 1, 2), y = (0, 2, 1): Pearson r = 0.5, so r^2 = 0.25.
    idx = ["a", "b", "c"]
    r2 = mean_expression_r2(pd.Series([0.0, 2.0, 1.0], idx), pd.Series([0.0, 1.0, 2.0], idx))
    assert r2 == pytest.approx(0.25)


def test_r2_on_a_gene_subset_and_missing_genes() -> None:
    idx = ["a", "b", "c", "d"]
    pred = pd.Series([0.0, 1.0, 2.0, 100.0], idx)
    real = pd.Series([0.0, 1.0, 2.0, -5.0], idx)
    assert mean_expression_r2(pred, real, genes=["a", "b", "c"]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="absent"):
        mean_expression_r2(pred, real, genes=["a", "zz"])


def test_relative_energy_distance_known_shift() -> None:
    # Point masses: E = 2 d. Control at 0, real at 3, prediction at 2: (2*1) / (2*3) = 1/3.
    real = np.full((5, 1), 3.0)
    assert relative_energy_distance(np.full((5, 1), 2.0), real, np.zeros((5, 1))) == (
        pytest.approx(1 / 3)
    )
    assert relative_energy_distance(real, real, np.zeros((5, 1))) == 0.0
    control = np.random.default_rng(0).normal(size=(30, 2))
    assert relative_energy_distance(control, control + 2, control) == pytest.approx(1.0)


def test_jaccard_known_value() -> None:
    assert jaccard(["a", "b", "c"], ["b", "c", "d"]) == 0.5
    assert jaccard([], []) == 1.0


def test_top_degs_find_the_responding_genes(ctrl_stim) -> None:
    ctrl, stim = ctrl_stim
    assert set(top_degs(stim, ctrl, n_top=10)) == {f"g{j}" for j in range(10)}


def test_deg_jaccard_identical_prediction_is_one(ctrl_stim) -> None:
    ctrl, stim = ctrl_stim
    assert deg_jaccard(stim, stim, ctrl, n_top=10) == 1.0


def test_perturbation_scores_perfect_and_no_change(ctrl_stim) -> None:
    ctrl, stim = ctrl_stim
    space = CommonSpace(n_hvg=40, n_pcs=5).fit(ad.concat([ctrl, stim]))
    perfect = perturbation_scores(stim, stim, ctrl, space=space, n_top_degs=10)
    assert perfect["r2_all"] == pytest.approx(1.0)
    assert perfect["r2_top_degs"] == pytest.approx(1.0)
    assert perfect["e_distance"] == pytest.approx(0.0, abs=1e-9)
    assert perfect["e_distance_relative"] == pytest.approx(0.0, abs=1e-9)
    assert perfect["deg_jaccard"] == 1.0
    none = perturbation_scores(ctrl, stim, ctrl, space=space, n_top_degs=10)
    assert none["e_distance_relative"] == pytest.approx(1.0)
    assert none["r2_all"] < 0.9


def test_perturbation_scores_of_lognorm_predictions_equal_those_of_counts(ctrl_stim) -> None:
    """A prediction given as log1p(CP10k) values (a linear baseline) scores like its counts."""
    ctrl, stim = ctrl_stim
    space = CommonSpace(n_hvg=40, n_pcs=5).fit(ad.concat([ctrl, stim]))
    lognorm = stim.copy()
    lognorm.X = sp.csr_matrix(log1p_cp10k(stim.X))
    as_counts = perturbation_scores(stim, stim, ctrl, space=space, n_top_degs=10)
    as_lognorm = perturbation_scores(
        lognorm, stim, ctrl, space=space, n_top_degs=10, predicted_kind="lognorm"
    )
    assert as_lognorm == pytest.approx(as_counts, abs=1e-5)


def test_perturbation_scores_refuse_mismatched_genes(ctrl_stim) -> None:
    ctrl, stim = ctrl_stim
    with pytest.raises(ValueError, match="same genes"):
        perturbation_scores(stim[:, :30].copy(), stim, ctrl)
