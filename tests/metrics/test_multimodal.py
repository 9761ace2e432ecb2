from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scvi_gen.metrics import (
    ModalitySpace,
    bootstrap_sign_stability,
    clr_transform,
    compare_marker_correlations,
    evaluate_multimodal,
    infer_modality_kinds,
    joint_sign_stability,
    marker_correlations,
    match_marker_pairs,
    multimodal_table,
    prediction_scores,
)


def _cite(n: int, seed: int, couple: bool = True) -> md.MuData:
    """RNA (CD3E + 19 genes) and protein (CD3 + 5) driven by a shared cell state."""
    rng = np.random.default_rng(seed)
    state = rng.integers(0, 2, n)
    rna_state = state if couple else rng.permutation(state)
    # Only the markers (and a few genes/proteins) follow the state: CP10k and CLR keep it.
    gene_effect = np.ones(20)
    gene_effect[:6] = [8.0, 4.0, 4.0, 0.25, 0.25, 4.0]
    prot_effect = np.array([8.0, 4.0, 0.25, 1.0, 1.0, 1.0])
    gene_means = 2.0 * np.where(rna_state[:, None] == 1, gene_effect, 1.0)
    prot_means = 10.0 * np.where(state[:, None] == 1, prot_effect, 1.0)
    rna = ad.AnnData(sp.csr_matrix(rng.poisson(gene_means).astype(np.float32)))
    rna.var_names = ["hg19_CD3E", *[f"hg19_G{j}" for j in range(19)]]
    prot = ad.AnnData(sp.csr_matrix(rng.poisson(prot_means).astype(np.float32)))
    prot.var_names = ["CD3", "CD4", "CD8", "CD14", "IL7Ralpha (CD127)", "IgG1"]
    for mod in (rna, prot):
        mod.obs_names = [f"c{seed}_{i}" for i in range(n)]
    with md.set_options(pull_on_update=False):
        return md.MuData({"rna": rna, "prot": prot})


def test_clr_matches_the_seurat_formula():
    x = np.array([[1.0, 10.0, 0.0], [3.0, 3.0, 3.0]])
    expected = np.log1p(x / np.exp(np.log1p(x).mean(axis=1, keepdims=True)))
    np.testing.assert_allclose(clr_transform(sp.csr_matrix(x)), expected, rtol=1e-6)


def test_atac_space_drops_the_depth_component():
    rng = np.random.default_rng(0)
    peaks = ad.AnnData(sp.csr_matrix(rng.poisson(0.3, (80, 50)).astype(np.float32)))
    space = ModalitySpace("atac", n_components=5).fit(peaks)
    data = space.transform(peaks)
    assert data.pcs.shape == (80, 5)
    np.testing.assert_array_equal(data.library_size, (peaks.X > 0).sum(axis=1).A1)
    assert set(np.unique(data.expression)) <= {0.0, 1.0}


def test_space_must_be_fitted_and_features_present():
    prot = _cite(30, 0).mod["prot"]
    with pytest.raises(RuntimeError, match="not fitted"):
        ModalitySpace("protein").transform(prot)
    space = ModalitySpace("protein").fit(prot)
    with pytest.raises(ValueError, match="missing"):
        space.transform(prot[:, :3])
    with pytest.raises(ValueError, match="Unknown modality kind"):
        ModalitySpace("hto")


def test_same_distribution_scores_near_the_floor():
    train, test, synthetic = _cite(200, 0), _cite(200, 1), _cite(200, 2)
    df = evaluate_multimodal(train, test, synthetic, n_hvg=20, n_components=5)
    assert set(df["modality"]) == {"rna", "prot", "joint"}
    assert set(df["comparison"]) == {"synthetic", "floor"}
    table = multimodal_table(df)
    auc = table.set_index(["modality", "metric"]).loc[("joint", "c2st_auc")]
    assert auc["synthetic"] < 0.65
    assert df.attrs["n_cells"]["floor"] == 100


def test_joint_score_catches_modalities_generated_independently():
    train, test = _cite(200, 0), _cite(200, 1)
    coupled, shuffled = _cite(200, 2), _cite(200, 2, couple=False)

    def joint(metric, synthetic):
        df = evaluate_multimodal(train, test, synthetic, n_hvg=20, n_components=5)
        rows = df[
            (df.modality == "joint") & (df.metric == metric) & (df.comparison == "synthetic")
        ]
        return float(rows["value"].iloc[0])

    assert joint("cross_cov_error", shuffled) > 3 * joint("cross_cov_error", coupled)
    assert joint("energy_distance", shuffled) > joint("energy_distance", coupled)


def test_missing_modality_is_named():
    train = _cite(30, 0)
    with pytest.raises(KeyError, match="'atac' is not in train"):
        evaluate_multimodal(train, train, train, {"rna": "rna", "atac": "atac"})


def test_modality_kinds_from_names():
    assert infer_modality_kinds(["rna", "ADT", "atac"]) == {
        "rna": "rna",
        "ADT": "protein",
        "atac": "atac",
    }
    with pytest.raises(ValueError, match="modalities="):
        infer_modality_kinds(["hto"])


def test_marker_pairs_ignore_prefixes_suffixes_and_parentheses():
    genes = ["hg19_CD3E", "CD8A", "IL7R", "hg19_CD19"]
    proteins = ["CD3_TotalSeqB", "CD8a_TotalSeqB", "IL7Ralpha (CD127)", "B220 (CD45R)"]
    assert match_marker_pairs(genes, proteins) == [
        ("hg19_CD3E", "CD3_TotalSeqB"),
        ("CD8A", "CD8a_TotalSeqB"),
        ("IL7R", "IL7Ralpha (CD127)"),
    ]


def test_marker_correlation_sign_follows_the_data():
    cite = _cite(300, 0)
    out = marker_correlations(cite.mod["rna"], cite.mod["prot"])
    assert list(out["gene"]) == ["hg19_CD3E"]
    assert out["correlation"].iloc[0] > 0.5
    anti = cite.mod["prot"].copy()
    anti.X = sp.csr_matrix(anti.X.max() - anti.X.toarray())
    assert marker_correlations(cite.mod["rna"], anti)["correlation"].iloc[0] < 0


def test_compare_marker_correlations_flags_sign_and_nan():
    real, fake = _cite(200, 0), _cite(200, 1, couple=False)
    fake.mod["rna"].X = sp.csr_matrix(fake.mod["rna"].shape, dtype=np.float32)
    out = compare_marker_correlations(
        real.mod["rna"], real.mod["prot"], fake.mod["rna"], fake.mod["prot"]
    )
    assert np.isnan(out["synthetic"].iloc[0]) and out["same_sign"].iloc[0] is None
    same = compare_marker_correlations(
        real.mod["rna"], real.mod["prot"], real.mod["rna"], real.mod["prot"]
    )
    assert bool(same["same_sign"].iloc[0])
    assert bool(same["real_significant"].iloc[0])


def test_compare_marker_correlations_marks_a_coupled_pair_sign_stable():
    real = _cite(200, 0)
    out = compare_marker_correlations(
        real.mod["rna"], real.mod["prot"], real.mod["rna"], real.mod["prot"], n_bootstrap=200
    )
    assert out["real_sign_stability"].iloc[0] == 1.0
    assert bool(out["real_sign_stable"].iloc[0])


def test_compare_marker_correlations_marks_an_uncoupled_pair_sign_unstable():
    real = _cite(200, 0, couple=False)
    out = compare_marker_correlations(
        real.mod["rna"], real.mod["prot"], real.mod["rna"], real.mod["prot"], n_bootstrap=400
    )
    assert not bool(out["real_sign_stable"].iloc[0])


def test_compare_marker_correlations_flags_an_attenuated_correlation_inconsistent():
    real = _cite(300, 0)
    same = compare_marker_correlations(
        real.mod["rna"], real.mod["prot"], real.mod["rna"], real.mod["prot"], n_bootstrap=10
    )
    assert bool(same["consistent"].iloc[0])
    # Same cells, half of them with shuffled RNA: same sign, weaker correlation.
    weak = real.mod["rna"].copy()
    rows = np.arange(weak.n_obs)
    rows[::2] = np.random.default_rng(0).permutation(rows[::2])
    weak.X = weak.X[rows]
    out = compare_marker_correlations(
        real.mod["rna"], real.mod["prot"], weak, real.mod["prot"], n_bootstrap=10
    )
    assert bool(out["same_sign"].iloc[0])
    assert not bool(out["consistent"].iloc[0])


def test_sign_stability_of_a_strong_correlation_is_one():
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    assert bootstrap_sign_stability(x, -x + 0.5 * rng.normal(size=400)) == 1.0


def test_spearman_sign_stability_of_a_monotone_relation_is_one():
    x = np.random.default_rng(4).exponential(size=200)
    assert bootstrap_sign_stability(x, np.exp(x), n_bootstrap=50, method="spearman") == 1.0


def test_sign_stability_of_independent_variables_averages_one_half():
    # Over many independent data sets the resampled sign agrees with the sample's about
    # half the time (it agrees more often than not within each data set, by construction).
    rng = np.random.default_rng(1)
    stabilities = [
        bootstrap_sign_stability(rng.normal(size=300), rng.normal(size=300), n_bootstrap=200)
        for _ in range(40)
    ]
    assert 0.5 <= np.mean(stabilities) < 0.85
    assert min(stabilities) >= 0.5 - 0.1


def test_sign_stability_counts_constant_resamples_as_flips():
    # One non-zero cell in 50: most resamples miss it and the correlation is undefined.
    x = np.zeros(50)
    x[0] = 1.0
    y = np.arange(50.0)
    assert bootstrap_sign_stability(x, y, n_bootstrap=500, seed=0) < 0.7


def test_sign_stability_is_reproducible_and_block_independent(monkeypatch):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=100), rng.normal(size=100)
    first = bootstrap_sign_stability(x, y, n_bootstrap=300, seed=3)
    assert bootstrap_sign_stability(x, y, n_bootstrap=300, seed=3) == first
    # Blocks of 7 resamples draw the same stream as one block of all 300.
    monkeypatch.setattr("scvi_gen.metrics._multimodal._BOOTSTRAP_BLOCK_VALUES", 700)
    assert bootstrap_sign_stability(x, y, n_bootstrap=300, seed=3) == first


def test_sign_stability_rejects_mismatched_vectors():
    with pytest.raises(ValueError, match="1-D of one length"):
        bootstrap_sign_stability(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="n_bootstrap"):
        bootstrap_sign_stability(np.arange(3.0), np.arange(3.0), n_bootstrap=0)


def test_prediction_scores_against_a_mean_baseline():
    prot = _cite(100, 0).mod["prot"]
    mean = np.asarray(prot.X.mean(axis=0)).ravel()
    scores = prediction_scores(prot, prot.X.toarray(), baseline=mean)
    np.testing.assert_allclose(scores["pearson"], 1.0)
    np.testing.assert_allclose(scores["mse"], 0.0, atol=1e-12)
    assert scores["baseline_pearson"].isna().all()
    assert (scores["baseline_mse"] > 0).all()
    with pytest.raises(ValueError, match="shape"):
        prediction_scores(prot, prot.X.toarray()[:, :3])


def test_multimodal_table_ratios():
    df = pd.DataFrame(
        {
            "modality": ["prot", "prot"],
            "comparison": ["synthetic", "floor"],
            "metric": ["mmd_rbf", "mmd_rbf"],
            "scope": ["global", "global"],
            "value": [0.2, 0.1],
        }
    )
    table = multimodal_table(df)
    assert float(table["ratio_to_floor"].iloc[0]) == pytest.approx(2.0)
    assert not bool(table["higher_is_better"].iloc[0])


def test_compare_marker_correlations_counts_the_real_cells_detecting_the_gene():
    real = _cite(100, 0)
    counts = np.zeros(real.mod["rna"].shape, dtype=np.float32)
    gene = list(real.mod["rna"].var_names).index("hg19_CD3E")
    counts[:, (gene + 1) % counts.shape[1]] = 5  # another gene keeps every library non-zero
    counts[[3, 17, 42], gene] = [1, 2, 7]
    rna = real.mod["rna"].copy()
    rna.X = sp.csr_matrix(counts)
    out = compare_marker_correlations(rna, real.mod["prot"], rna, real.mod["prot"], n_bootstrap=5)
    assert out["real_gene_cells"].tolist() == [3]


def _stability_of(cite: md.MuData, pair: tuple[str, str], n_bootstrap: int) -> float:
    out = compare_marker_correlations(
        cite.mod["rna"],
        cite.mod["prot"],
        cite.mod["rna"],
        cite.mod["prot"],
        [pair],
        n_bootstrap=n_bootstrap,
        seed=5,
    )
    return float(out["real_sign_stability"].iloc[0])


def test_joint_sign_stability_of_a_repeated_pair_is_its_own_stability():
    cite = _cite(60, 0, couple=False)
    pair = ("hg19_CD3E", "CD3")
    joint = joint_sign_stability(
        cite.mod["rna"], cite.mod["prot"], [pair, pair], n_bootstrap=300, seed=5
    )
    assert 0.5 < joint < 1.0
    assert joint == _stability_of(cite, pair, 300)


def test_joint_sign_stability_with_a_sure_pair_is_the_other_pairs_stability():
    # CD3E/CD3 keeps its sign in every resample, so only the uncoupled pair can flip.
    cite = _cite(80, 0)
    noise = ("hg19_G10", "IgG1")
    assert _stability_of(cite, ("hg19_CD3E", "CD3"), 300) == 1.0
    joint = joint_sign_stability(
        cite.mod["rna"], cite.mod["prot"], [("hg19_CD3E", "CD3"), noise], n_bootstrap=300, seed=5
    )
    assert joint == _stability_of(cite, noise, 300) < 1.0


def test_joint_sign_stability_is_at_most_each_pairs_stability():
    cite = _cite(80, 1, couple=False)
    pairs = [("hg19_CD3E", "CD3"), ("hg19_G10", "IgG1"), ("hg19_G12", "CD14")]
    joint = joint_sign_stability(cite.mod["rna"], cite.mod["prot"], pairs, n_bootstrap=300, seed=5)
    assert joint <= min(_stability_of(cite, p, 300) for p in pairs)


def test_marker_stability_column_of_each_pair_matches_the_single_pair_function():
    # All pairs are resampled together; each column must still be that pair's own stability.
    cite = _cite(70, 2, couple=False)
    pairs = [("hg19_CD3E", "CD3"), ("hg19_G10", "IgG1"), ("hg19_G12", "CD14")]
    out = compare_marker_correlations(
        cite.mod["rna"],
        cite.mod["prot"],
        cite.mod["rna"],
        cite.mod["prot"],
        pairs,
        n_bootstrap=200,
    )
    counts = cite.mod["rna"].X.toarray()
    cp10k = np.log1p(counts * (1e4 / counts.sum(axis=1, keepdims=True)))
    clr = clr_transform(cite.mod["prot"].X.toarray())
    genes, prots = list(cite.mod["rna"].var_names), list(cite.mod["prot"].var_names)
    for row, (gene, prot) in enumerate(pairs):
        x, y = cp10k[:, genes.index(gene)], clr[:, prots.index(prot)]
        assert out["real_sign_stability"].iloc[row] == bootstrap_sign_stability(
            x, y, n_bootstrap=200
        )


def test_joint_sign_stability_rejects_different_cells():
    cite = _cite(50, 0)
    with pytest.raises(ValueError, match="not the same cells"):
        joint_sign_stability(cite.mod["rna"], cite.mod["prot"][:40])


def test_atac_space_keeps_only_the_most_open_peaks_dense():
    rng = np.random.default_rng(1)
    rates = np.linspace(0.05, 0.9, 50)
    peaks = ad.AnnData(sp.csr_matrix(rng.poisson(rates, (80, 50)).astype(np.float32)))
    space = ModalitySpace("atac", n_hvg=10, n_components=5).fit(peaks)
    data = space.transform(peaks)
    assert data.expression.shape == (80, 10)
    open_fraction = (peaks.X > 0).mean(axis=0).A1
    expected = np.sort(np.argsort(-open_fraction, kind="stable")[:10])
    np.testing.assert_array_equal(data.expression, (peaks.X[:, expected] > 0).toarray())
