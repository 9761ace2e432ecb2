"""Metrics for multimodal synthetic cells: per modality, joint, and RNA-protein consistency.

Every modality is scored in its own space fitted on the real training cells:

- RNA: the :class:`CommonSpace` of :func:`evaluate` (seurat_v3 HVGs, log1p(CP10k), PCA).
- Protein: CLR (``log1p(x / exp(mean_j log1p(x_j)))`` per cell, as Seurat/muon) or log1p
  counts, then PCA.
- ATAC: binarised peaks, TF-IDF (``log1p(tf * idf * 1e4)``, IDF from the training cells) and
  LSI (truncated SVD) without its first component, which tracks sequencing depth.

The test set is split into halves A and B once; the *floor* scores A against B and the
*synthetic* comparison scores a synthetic subsample of A's size (and label composition)
against the same B, in every modality and in the joint space. The joint space concatenates
the per-modality embeddings, each scaled to unit total variance on the training cells, so a
generator that produced each modality well but independently of the others is caught there
(and by ``cross_cov_error``: the Frobenius norm of the difference, real vs synthetic, of the
cross-covariance between the scaled embeddings of every pair of modalities).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.decomposition import PCA, TruncatedSVD

from scvi_gen._matrix import get_matrix, iter_row_chunks

from ._classifier import classifier_two_sample_auc
from ._common_space import CommonSpace, TransformedData
from ._distances import energy_distance, mmd_bandwidths, mmd_rbf, wasserstein
from ._evaluate import _labels_of, _match_label_composition, _stratified_halves
from ._gene_stats import gene_mean_correlation, gene_variance_correlation, library_size_distance
from ._prdc import precision_recall_density_coverage
from ._utils import pearson, rowwise_pearson

logger = logging.getLogger(__name__)

ModalityKind = Literal["rna", "protein", "atac"]
ProteinTransform = Literal["clr", "log1p"]

#: Names that identify a modality's kind when ``modalities`` is not given.
_KIND_BY_NAME: dict[str, ModalityKind] = {
    "rna": "rna",
    "gex": "rna",
    "prot": "protein",
    "protein": "protein",
    "adt": "protein",
    "atac": "atac",
    "peaks": "atac",
}
_TFIDF_SCALE = 1e4
#: Library size RNA counts are normalised to before ``log1p`` (CP10k).
_CP10K = 1e4
_PRDC_K = 5

#: Metric directions of :func:`evaluate_multimodal`.
MULTIMODAL_HIGHER_IS_BETTER: dict[str, bool] = {
    "wasserstein_1": False,
    "mmd_rbf": False,
    "energy_distance": False,
    "c2st_auc": False,
    "prdc_precision": True,
    "prdc_recall": True,
    "prdc_density": True,
    "prdc_coverage": True,
    "feature_mean_corr": True,
    "feature_var_corr": True,
    "library_size_w1": False,
    "cross_cov_error": False,
}

#: RNA gene -> names its protein goes by in antibody panels (matched case-insensitively,
#: ignoring ``hg19_``-style prefixes, ``_TotalSeqB``-style suffixes and parentheses).
DEFAULT_MARKER_PAIRS: dict[str, tuple[str, ...]] = {
    "CD3E": ("CD3",),
    "CD4": ("CD4",),
    "CD8A": ("CD8", "CD8A"),
    "CD14": ("CD14",),
    "CD19": ("CD19",),
    "MS4A1": ("CD20",),
    "FCGR3A": ("CD16",),
    "NCAM1": ("CD56",),
    "ITGAM": ("CD11B",),
    "ITGAX": ("CD11C",),
    "PTPRC": ("CD45",),
    "IL7R": ("CD127", "IL7RALPHA"),
    "SELL": ("CD62L",),
    "CCR7": ("CCR7", "CD197"),
    "CD27": ("CD27",),
    "CD28": ("CD28",),
    "CD2": ("CD2",),
    "CD5": ("CD5",),
    "CD7": ("CD7",),
    "CD69": ("CD69",),
    "CD44": ("CD44",),
    "IL2RA": ("CD25",),
    "CD34": ("CD34",),
    "HLA-DRA": ("HLA-DR", "MHCII"),
    "PDCD1": ("PD-1", "PD1", "CD279"),
    "CD274": ("PD-L1", "CD274"),
    "TIGIT": ("TIGIT",),
}
#: Two-sided 5% critical value of the standard normal (Fisher z test of a correlation).
_Z_95 = 1.959964
#: Values resampled at once per pair by :func:`bootstrap_sign_stability` (bounds its memory).
_BOOTSTRAP_BLOCK_VALUES = 4_000_000
_GENOME_PREFIXES = ("HG19_", "GRCH38_", "GRCH38-", "HG38_", "MM10_")


# ---------------------------------------------------------------- transforms
def clr_transform(counts: Any) -> np.ndarray:
    """Centred log-ratio of protein counts per cell, as Seurat's and muon's ``clr``.

    ``log1p(x / exp(mean_j log1p(x_j)))`` over the proteins of each cell.

    Parameters
    ----------
    counts
        Cells x proteins counts (dense or sparse).

    Returns
    -------
    Dense float32 array of the same shape.

    Examples
    --------
    >>> clr_transform(np.array([[1.0, 10.0], [0.0, 3.0]])).shape
    (2, 2)
    """
    x = np.asarray(counts.toarray() if sp.issparse(counts) else counts, dtype=np.float64)
    geometric = np.exp(np.log1p(x).mean(axis=1, keepdims=True))
    return np.log1p(x / geometric).astype(np.float32)


def _protein_features(counts: Any, transform: ProteinTransform) -> np.ndarray:
    if transform == "clr":
        return clr_transform(counts)
    if transform == "log1p":
        x = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
        return np.log1p(np.asarray(x, dtype=np.float64)).astype(np.float32)
    raise ValueError(f"Unknown protein transform {transform!r}; use 'clr' or 'log1p'.")


def _binary(counts: Any) -> sp.csr_matrix:
    matrix = sp.csr_matrix(counts, dtype=np.float32)
    matrix.data = (matrix.data > 0).astype(np.float32)
    matrix.eliminate_zeros()
    return matrix


def _library(counts: Any) -> np.ndarray:
    blocks = [np.asarray(b.sum(axis=1), dtype=np.float64).ravel() for b in iter_row_chunks(counts)]
    return np.concatenate(blocks) if blocks else np.zeros(0)


class ModalitySpace:
    """Evaluation space of one modality, fitted on the real training cells.

    Parameters
    ----------
    kind
        ``"rna"``, ``"protein"`` or ``"atac"``.
    n_hvg
        RNA: number of seurat_v3 HVGs. ATAC: number of peaks, the most often open in the
        training cells, whose per-peak statistics are compared (the LSI uses every peak); only
        these are held dense.
    n_components
        Number of PCs (RNA, protein) or LSI components (ATAC, after dropping the first).
    protein_transform
        ``"clr"`` or ``"log1p"``.
    seed
        Seed of the randomised decompositions.

    Examples
    --------
    >>> space = ModalitySpace("protein").fit(train["prot"])
    >>> data = space.transform(synthetic["prot"])
    """

    def __init__(
        self,
        kind: ModalityKind,
        *,
        n_hvg: int = 2000,
        n_components: int = 30,
        protein_transform: ProteinTransform = "clr",
        seed: int = 0,
    ) -> None:
        if kind not in ("rna", "protein", "atac"):
            raise ValueError(f"Unknown modality kind {kind!r}; use 'rna', 'protein' or 'atac'.")
        self.kind = kind
        self.n_hvg = n_hvg
        self.n_components = n_components
        self.protein_transform = protein_transform
        self.seed = seed
        self.feature_names_: pd.Index | None = None
        self._rna: CommonSpace | None = None
        self._pca: PCA | None = None
        self._svd: TruncatedSVD | None = None
        self._idf: np.ndarray | None = None
        self._peak_index: np.ndarray | None = None

    def fit(self, train: ad.AnnData) -> ModalitySpace:
        """Fit on real training counts of this modality (``.X``).

        Parameters
        ----------
        train
            Real training cells.

        Returns
        -------
        ``self``, fitted.
        """
        self.feature_names_ = pd.Index(train.var_names.astype(str))
        counts = get_matrix(train)
        if self.kind == "rna":
            self._rna = CommonSpace(self.n_hvg, self.n_components, seed=self.seed)
            self._rna.fit(train)
        elif self.kind == "protein":
            features = _protein_features(counts, self.protein_transform)
            n = min(self.n_components, features.shape[1], features.shape[0])
            self._pca = PCA(n_components=n, random_state=self.seed).fit(features)
        else:
            binary = _binary(counts)
            document_frequency = np.asarray(binary.sum(axis=0)).ravel()
            self._idf = binary.shape[0] / (1.0 + document_frequency)
            most_open = np.argsort(-document_frequency, kind="stable")[: self.n_hvg]
            self._peak_index = np.sort(most_open)
            tfidf = self._tfidf(binary)
            n = min(self.n_components + 1, min(tfidf.shape) - 1)
            if n < 2:
                raise ValueError("ATAC data too small for LSI (need at least 3 peaks and cells).")
            self._svd = TruncatedSVD(n_components=n, random_state=self.seed).fit(tfidf)
        return self

    def _tfidf(self, binary: sp.csr_matrix) -> sp.csr_matrix:
        totals = np.asarray(binary.sum(axis=1)).ravel()
        scale = np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)
        tf = sp.diags(scale) @ binary
        out = sp.csr_matrix(tf @ sp.diags(self._idf * _TFIDF_SCALE))
        out.data = np.log1p(out.data)
        return out

    def _check_features(self, adata: ad.AnnData) -> ad.AnnData:
        names = pd.Index(adata.var_names.astype(str))
        if names.equals(self.feature_names_):
            return adata
        missing = self.feature_names_.difference(names)
        if len(missing):
            raise ValueError(
                f"{len(missing)} {self.kind} features of the training data are missing "
                f"(e.g. {list(missing[:5])})."
            )
        return adata[:, self.feature_names_]

    def transform(self, adata: ad.AnnData) -> TransformedData:
        """Map counts (``.X``) of this modality into the fitted space.

        Parameters
        ----------
        adata
            Real or synthetic cells with the training features (matched by name).

        Returns
        -------
        ``(expression, pcs, library_size)``: per-feature values (log1p(CP10k) HVGs, transformed
        proteins or binary peaks), the embedding, and total counts per cell (open peaks for
        ATAC).
        """
        if self.feature_names_ is None:
            raise RuntimeError("ModalitySpace is not fitted; call fit(train) first.")
        adata = self._check_features(adata)
        counts = get_matrix(adata)
        if self.kind == "rna":
            return self._rna.transform(adata, kind="counts")
        if self.kind == "protein":
            features = _protein_features(counts, self.protein_transform)
            return TransformedData(features, self._pca.transform(features), _library(counts))
        binary = _binary(counts)
        lsi = self._svd.transform(self._tfidf(binary))[:, 1:]
        # Open peaks per cell: comparable between peak counts and binary (generated) peaks.
        # Dense over the compared peaks only: a full cells x peaks matrix may not fit.
        return TransformedData(binary[:, self._peak_index].toarray(), lsi, _library(binary))


def infer_modality_kinds(names: Sequence[str]) -> dict[str, ModalityKind]:
    """Kind of each modality from its name (``rna``, ``prot``/``adt``, ``atac``...).

    Parameters
    ----------
    names
        Modality names.

    Returns
    -------
    ``{name: kind}``.

    Examples
    --------
    >>> infer_modality_kinds(["rna", "prot"])
    {'rna': 'rna', 'prot': 'protein'}
    """
    kinds = {}
    for name in names:
        kind = _KIND_BY_NAME.get(str(name).lower())
        if kind is None:
            raise ValueError(
                f"Cannot tell the kind of modality {name!r}; pass modalities={{name: kind}} "
                "with kinds 'rna', 'protein' or 'atac'."
            )
        kinds[str(name)] = kind
    return kinds


# ------------------------------------------------------------------ scoring
def _distribution_scores(
    reference: np.ndarray, sample: np.ndarray, bandwidths: np.ndarray, seed: int, max_cells: int
) -> dict[str, float]:
    scores = {
        "wasserstein_1": wasserstein(reference, sample, 1, max_cells=max_cells, seed=seed),
        "mmd_rbf": mmd_rbf(
            reference, sample, bandwidths, biased=True, max_cells=max_cells, seed=seed
        ),
        "energy_distance": energy_distance(reference, sample, max_cells=max_cells, seed=seed),
        "c2st_auc": classifier_two_sample_auc(reference, sample, seed, max_cells=max_cells),
    }
    if min(len(reference), len(sample)) > _PRDC_K:
        prdc = precision_recall_density_coverage(
            reference, sample, k=_PRDC_K, max_cells=max_cells, seed=seed
        )
        scores.update({f"prdc_{k}": v for k, v in prdc.items()})
    return scores


def _feature_scores(reference: TransformedData, sample: TransformedData) -> dict[str, float]:
    scores = {
        "feature_mean_corr": gene_mean_correlation(reference.expression, sample.expression),
        "feature_var_corr": gene_variance_correlation(reference.expression, sample.expression),
    }
    if reference.library_size is not None and sample.library_size is not None:
        scores["library_size_w1"] = library_size_distance(
            reference.library_size, sample.library_size
        )
    return scores


def _take(data: TransformedData, idx: np.ndarray) -> TransformedData:
    library = None if data.library_size is None else data.library_size[idx]
    return TransformedData(data.expression[idx], data.pcs[idx], library)


def _cross_covariances(blocks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Covariances between the components of every pair of modalities' embeddings."""
    out = []
    for i in range(len(blocks)):
        for j in range(i + 1, len(blocks)):
            a = blocks[i] - blocks[i].mean(axis=0)
            b = blocks[j] - blocks[j].mean(axis=0)
            out.append(a.T @ b / max(len(a) - 1, 1))
    return out


def _cross_cov_error(reference: Sequence[np.ndarray], sample: Sequence[np.ndarray]) -> float:
    # Embeddings are scaled to unit total variance on the training cells, so the Frobenius
    # norm weighs each pair of components by how much variance they carry.
    pairs = zip(_cross_covariances(reference), _cross_covariances(sample))
    errors = [float(np.linalg.norm(r - s)) for r, s in pairs]
    return float(np.mean(errors)) if errors else float("nan")


def _row(modality: str, comparison: str, metric: str, value: float) -> dict[str, Any]:
    return {
        "modality": modality,
        "comparison": comparison,
        "metric": metric,
        "scope": "global",
        "value": float(value),
    }


def evaluate_multimodal(
    train: Any,
    test: Any,
    synthetic: Any,
    modalities: Mapping[str, ModalityKind] | None = None,
    labels_key: str | None = None,
    *,
    n_hvg: int = 2000,
    n_components: int = 30,
    protein_transform: ProteinTransform = "clr",
    seed: int = 0,
    max_cells: int = 2000,
    joint: bool = True,
) -> pd.DataFrame:
    """Score multimodal synthetic cells per modality and jointly, next to a real floor.

    Parameters
    ----------
    train
        Real training MuData (counts in ``.X`` of every modality); spaces are fitted on it.
    test
        Real held-out MuData with the same modalities.
    synthetic
        Generated MuData (e.g. :meth:`scvi_gen.CFGen.generate` of a multimodal model).
    modalities
        ``{modality name: kind}`` to score; ``None`` infers kinds from the names of the
        synthetic modalities (``rna``, ``prot``, ``atac`` ...).
    labels_key
        ``obs`` column of ``test`` and ``synthetic``: the halves are stratified by it and the
        synthetic subsample matches the label composition of the floor half.
    n_hvg
        RNA HVGs.
    n_components
        Components per modality.
    protein_transform
        ``"clr"`` or ``"log1p"``.
    seed
        Seed of the split, subsamples, classifiers and decompositions.
    max_cells
        Maximum cells per sample for each metric.
    joint
        Also score the joint space (needs two or more modalities).

    Returns
    -------
    Long table with columns ``modality`` (a modality name or ``"joint"``), ``comparison``
    (``"synthetic"``/``"floor"``), ``metric``, ``scope`` and ``value``.

    Examples
    --------
    >>> df = evaluate_multimodal(train, test, synthetic)
    >>> multimodal_table(df)
    """
    kinds = dict(modalities) if modalities is not None else infer_modality_kinds(synthetic.mod)
    for name in kinds:
        for which, data in (("train", train), ("test", test), ("synthetic", synthetic)):
            if name not in data.mod:
                raise KeyError(f"Modality {name!r} is not in {which} (has {list(data.mod)}).")
    if test.n_obs < 4:
        raise ValueError(f"The test set needs at least 4 cells to be split, got {test.n_obs}.")
    rng = np.random.default_rng(seed)
    test_labels = _labels_of(test, labels_key, "test")
    synthetic_labels = _labels_of(synthetic, labels_key, "synthetic")
    idx_a, idx_b = _stratified_halves(test_labels, test.n_obs, rng)
    floor_labels = None if test_labels is None else test_labels[idx_a]
    idx_syn = _match_label_composition(
        floor_labels, len(idx_a), synthetic_labels, synthetic.n_obs, rng
    )
    rows: list[dict[str, Any]] = []
    embeddings: dict[str, dict[str, np.ndarray]] = {"reference": {}, "floor": {}, "synthetic": {}}
    scales: dict[str, float] = {}
    for name, kind in kinds.items():
        space = ModalitySpace(
            kind,
            n_hvg=n_hvg,
            n_components=n_components,
            protein_transform=protein_transform,
            seed=seed,
        )
        train_data = space.fit(train.mod[name]).transform(train.mod[name])
        test_data = space.transform(test.mod[name])
        samples = {
            "reference": _take(test_data, idx_b),
            "floor": _take(test_data, idx_a),
            "synthetic": _take(space.transform(synthetic.mod[name]), idx_syn),
        }
        bandwidths = mmd_bandwidths(samples["floor"].pcs, samples["reference"].pcs, seed=seed)
        for comparison in ("synthetic", "floor"):
            scores = _distribution_scores(
                samples["reference"].pcs, samples[comparison].pcs, bandwidths, seed, max_cells
            )
            scores.update(_feature_scores(samples["reference"], samples[comparison]))
            rows += [_row(name, comparison, m, v) for m, v in scores.items()]
        scales[name] = float(np.sqrt(train_data.pcs.var(axis=0).sum())) or 1.0
        for key, data in samples.items():
            embeddings[key][name] = data.pcs / scales[name]
    if joint and len(kinds) > 1:
        rows += _joint_rows(embeddings, seed, max_cells)
    df = pd.DataFrame(rows, columns=["modality", "comparison", "metric", "scope", "value"])
    df.attrs.update(
        {
            "modalities": kinds,
            "n_cells": {"reference": len(idx_b), "floor": len(idx_a), "synthetic": len(idx_syn)},
            "protein_transform": protein_transform,
            "seed": seed,
        }
    )
    return df


def _joint_rows(
    embeddings: Mapping[str, Mapping[str, np.ndarray]], seed: int, max_cells: int
) -> list[dict[str, Any]]:
    joined = {key: np.hstack(list(blocks.values())) for key, blocks in embeddings.items()}
    bandwidths = mmd_bandwidths(joined["floor"], joined["reference"], seed=seed)
    rows = []
    for comparison in ("synthetic", "floor"):
        scores = _distribution_scores(
            joined["reference"], joined[comparison], bandwidths, seed, max_cells
        )
        scores["cross_cov_error"] = _cross_cov_error(
            list(embeddings["reference"].values()), list(embeddings[comparison].values())
        )
        rows += [_row("joint", comparison, m, v) for m, v in scores.items()]
    return rows


def multimodal_table(df: pd.DataFrame) -> pd.DataFrame:
    """Wide summary of :func:`evaluate_multimodal`: synthetic, floor and their ratio.

    Parameters
    ----------
    df
        Long output of :func:`evaluate_multimodal`.

    Returns
    -------
    One row per ``(modality, metric)`` with ``synthetic``, ``floor``, ``ratio_to_floor`` and
    ``higher_is_better``.

    Examples
    --------
    >>> multimodal_table(evaluate_multimodal(train, test, synthetic))
    """
    wide = df.pivot_table(
        index=["modality", "metric"], columns="comparison", values="value", sort=False
    )
    wide = wide.reindex(columns=["synthetic", "floor"])
    with np.errstate(divide="ignore", invalid="ignore"):
        wide["ratio_to_floor"] = wide["synthetic"] / wide["floor"]
    table = wide.reset_index()
    table.columns.name = None
    table["higher_is_better"] = table["metric"].map(MULTIMODAL_HIGHER_IS_BETTER)
    return table


# --------------------------------------------------------- marker consistency
def _normalise_gene(name: str) -> str:
    upper = str(name).upper()
    for prefix in _GENOME_PREFIXES:
        if upper.startswith(prefix):
            return upper[len(prefix) :]
    return upper


def _protein_aliases(name: str) -> set[str]:
    """Names a panel's protein may be matched by: whole name, before/inside parentheses."""
    upper = str(name).upper()
    upper = upper.split("_TOTALSEQ")[0]
    aliases = {upper.strip()}
    if "(" in upper:
        outside, inside = upper.split("(", 1)
        aliases |= {outside.strip(), inside.rstrip(")").strip()}
    return {a for a in aliases if a}


def match_marker_pairs(
    gene_names: Sequence[str],
    protein_names: Sequence[str],
    pairs: Mapping[str, Sequence[str]] | None = None,
) -> list[tuple[str, str]]:
    """RNA gene / protein pairs present in both panels.

    Parameters
    ----------
    gene_names
        RNA feature names (``hg19_``-style prefixes are ignored).
    protein_names
        Protein feature names (``_TotalSeqB`` suffixes and parenthesised aliases handled).
    pairs
        ``{gene: protein aliases}``; default :data:`DEFAULT_MARKER_PAIRS`.

    Returns
    -------
    ``(gene feature name, protein feature name)`` pairs, first matching protein per gene.

    Examples
    --------
    >>> match_marker_pairs(["hg19_CD3E", "hg19_CD14"], ["CD3", "CD14", "CD19"])
    [('hg19_CD3E', 'CD3'), ('hg19_CD14', 'CD14')]
    """
    pairs = DEFAULT_MARKER_PAIRS if pairs is None else pairs
    genes = {_normalise_gene(g): str(g) for g in gene_names}
    aliases = [(str(p), _protein_aliases(p)) for p in protein_names]
    found = []
    for gene, names in pairs.items():
        gene_name = genes.get(gene.upper())
        if gene_name is None:
            continue
        wanted = {n.upper() for n in names}
        match = next((p for p, a in aliases if a & wanted), None)
        if match is not None:
            found.append((gene_name, match))
    return found


def _cp10k_scale(adata: ad.AnnData) -> np.ndarray:
    """Per-cell factor to CP10k over the genes of ``adata`` (0 for empty cells)."""
    library = _library(get_matrix(adata))
    return np.divide(_CP10K, library, out=np.zeros_like(library), where=library > 0)


def _marker_columns(
    rna: ad.AnnData,
    protein: ad.AnnData,
    pairs: Sequence[tuple[str, str]],
    protein_transform: ProteinTransform,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per pair: log1p(CP10k) RNA of the gene and transformed counts of the protein."""
    scale = _cp10k_scale(rna)
    genes = pd.Index(rna.var_names.astype(str))
    proteins = pd.Index(protein.var_names.astype(str))
    transformed = _protein_features(get_matrix(protein), protein_transform)
    counts = get_matrix(rna)
    columns = []
    for gene, prot in pairs:
        column = counts[:, genes.get_loc(gene)]
        column = np.asarray(column.toarray() if sp.issparse(column) else column).ravel()
        columns.append((np.log1p(column * scale), transformed[:, proteins.get_loc(prot)]))
    return columns


def _correlation(x: np.ndarray, y: np.ndarray, method: str) -> float:
    if method == "spearman":
        x, y = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    elif method != "pearson":
        raise ValueError(f"Unknown method {method!r}; use 'pearson' or 'spearman'.")
    return pearson(x, y)


def _fisher_z(correlations: pd.Series) -> np.ndarray:
    return np.arctanh(np.clip(correlations.to_numpy(dtype=float), -0.999999, 0.999999))


def _check_same_cells(rna: ad.AnnData, protein: ad.AnnData, rna_name: str, prot_name: str) -> None:
    if rna.n_obs != protein.n_obs:
        raise ValueError(
            f"{rna_name} has {rna.n_obs} cells, {prot_name} {protein.n_obs}: not the same cells."
        )


def _bootstrap_sign_agreement(
    columns: Sequence[tuple[np.ndarray, np.ndarray]],
    signs: np.ndarray,
    n_bootstrap: int,
    method: str,
    seed: int,
) -> np.ndarray:
    """``(n_bootstrap, pairs)``: does resample ``b`` keep pair ``j``'s sign ``signs[j]``?

    Every pair sees the same resampled cells, so the rows are joint draws over the pairs. A
    resample where either variable is constant counts as a flip.
    """
    n_cells = columns[0][0].size
    rng = np.random.default_rng(seed)
    # Resample in blocks so a large data set never holds n_bootstrap x n_cells values at once.
    block = max(1, _BOOTSTRAP_BLOCK_VALUES // max(n_cells, 1))
    agreement = np.zeros((n_bootstrap, len(columns)), dtype=bool)
    for start in range(0, n_bootstrap, block):
        idx = rng.integers(0, n_cells, size=(min(block, n_bootstrap - start), n_cells))
        for j, (x, y) in enumerate(columns):
            xs, ys = x[idx], y[idx]
            if method == "spearman":
                xs = pd.DataFrame(xs.T).rank().to_numpy().T
                ys = pd.DataFrame(ys.T).rank().to_numpy().T
            agreement[start : start + len(idx), j] = np.sign(rowwise_pearson(xs, ys)) == signs[j]
    return agreement


def _checked_columns(
    columns: Sequence[tuple[np.ndarray, np.ndarray]], n_bootstrap: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The pairs as float64 vectors of one length; errors that name the mismatch."""
    if n_bootstrap < 1:
        raise ValueError(f"`n_bootstrap` must be at least 1, got {n_bootstrap}.")
    checked = []
    for x, y in columns:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(f"x and y must be 1-D of one length, got {x.shape} and {y.shape}.")
        checked.append((x, y))
    if len({x.size for x, _ in checked}) > 1:
        raise ValueError("Every pair must have values in the same cells.")
    return checked


def _sign_stabilities(
    columns: Sequence[tuple[np.ndarray, np.ndarray]],
    n_bootstrap: int,
    method: str,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: the sample's sign (NaN where undefined) and the resamples' agreement with it."""
    columns = _checked_columns(columns, n_bootstrap)
    signs = np.array([np.sign(_correlation(x, y, method)) for x, y in columns])
    if not columns:
        return signs, np.zeros((n_bootstrap, 0), dtype=bool)
    return signs, _bootstrap_sign_agreement(columns, signs, n_bootstrap, method, seed)


def bootstrap_sign_stability(
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    method: Literal["pearson", "spearman"] = "pearson",
    seed: int = 0,
) -> float:
    """Fraction of bootstrap resamples of the cells whose correlation keeps the sample's sign.

    A correlation's sign is only a property of the cells when it survives resampling them: for
    a gene detected in a handful of cells, or a true correlation near 0, about half of the
    resamples flip it. Resamples where either variable is constant count as flips.

    Parameters
    ----------
    x, y
        Values of two features in the same cells.
    n_bootstrap
        Number of resamples (cells drawn with replacement).
    method
        ``"pearson"`` or ``"spearman"`` (ranks recomputed in each resample).
    seed
        Seed of the resampling.

    Returns
    -------
    A value in [0, 1]; NaN when the correlation of ``x`` and ``y`` itself is undefined.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=500)
    >>> bootstrap_sign_stability(x, x + rng.normal(size=500))
    1.0
    """
    signs, agreement = _sign_stabilities([(x, y)], n_bootstrap, method, seed)
    if not np.isfinite(signs[0]):
        return float("nan")
    return float(agreement[:, 0].mean())


def joint_sign_stability(
    real_rna: ad.AnnData,
    real_protein: ad.AnnData,
    pairs: Sequence[tuple[str, str]] | None = None,
    *,
    protein_transform: ProteinTransform = "clr",
    method: Literal["pearson", "spearman"] = "pearson",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> float:
    """Fraction of bootstrap resamples of the real cells that keep every marker pair's sign.

    This is how often resampling the real cells alone passes the check "every marker pair has
    the sign it has in the real cells": the ceiling of that check for a generator that samples
    cells exactly as the real ones were sampled. One pair whose real correlation is 0 within
    noise (a gene detected in a handful of cells, a protein on every cell) brings it to about
    one half, whatever the generator. Pairs whose real correlation is undefined are left out.

    Parameters
    ----------
    real_rna, real_protein
        Real cells (same cells in both).
    pairs
        ``(gene, protein)`` pairs; default: :func:`match_marker_pairs` of the panels.
    protein_transform, method
        As in :func:`marker_correlations`.
    n_bootstrap
        Resamples of the real cells; every pair sees the same resampled cells.
    seed
        Seed of the resampling (the same draws as :func:`bootstrap_sign_stability`).

    Returns
    -------
    A value in [0, 1]; 1.0 when no pair has a defined real correlation.

    Examples
    --------
    >>> joint_sign_stability(mdata["rna"], mdata["prot"])
    """
    _check_same_cells(real_rna, real_protein, "real_rna", "real_protein")
    if pairs is None:
        pairs = match_marker_pairs(real_rna.var_names, real_protein.var_names)
    columns = _marker_columns(real_rna, real_protein, pairs, protein_transform)
    signs, agreement = _sign_stabilities(columns, n_bootstrap, method, seed)
    return float(agreement[:, np.isfinite(signs)].all(axis=1).mean())


def marker_correlations(
    rna: ad.AnnData,
    protein: ad.AnnData,
    pairs: Sequence[tuple[str, str]] | None = None,
    *,
    protein_transform: ProteinTransform = "clr",
    method: Literal["pearson", "spearman"] = "pearson",
) -> pd.DataFrame:
    """Correlation across cells of each marker gene's RNA with the protein it encodes.

    RNA is log1p(CP10k) over the genes of ``rna`` (give real and synthetic RNA the same gene
    set so that their normalisations agree); proteins are CLR- or log1p-transformed.

    Parameters
    ----------
    rna
        RNA counts of the cells.
    protein
        Protein counts of the same cells, in the same order.
    pairs
        ``(gene, protein)`` feature names; default: :func:`match_marker_pairs` of the panels.
    protein_transform
        ``"clr"`` or ``"log1p"``.
    method
        ``"pearson"`` or ``"spearman"``.

    Returns
    -------
    Columns ``gene``, ``protein``, ``correlation`` (NaN when either is constant), ``n_cells``.

    Examples
    --------
    >>> marker_correlations(mdata["rna"], mdata["prot"])
    """
    _check_same_cells(rna, protein, "rna", "protein")
    if pairs is None:
        pairs = match_marker_pairs(rna.var_names, protein.var_names)
    rows = [
        {"gene": gene, "protein": prot, "correlation": _correlation(x, y, method)}
        for (gene, prot), (x, y) in zip(
            pairs, _marker_columns(rna, protein, pairs, protein_transform)
        )
    ]
    out = pd.DataFrame(rows, columns=["gene", "protein", "correlation"])
    out["n_cells"] = rna.n_obs
    return out


def compare_marker_correlations(
    real_rna: ad.AnnData,
    real_protein: ad.AnnData,
    synthetic_rna: ad.AnnData,
    synthetic_protein: ad.AnnData,
    pairs: Sequence[tuple[str, str]] | None = None,
    *,
    protein_transform: ProteinTransform = "clr",
    method: Literal["pearson", "spearman"] = "pearson",
    n_bootstrap: int = 1000,
    stable_sign: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """RNA-protein marker correlations of real and synthetic cells side by side.

    Parameters
    ----------
    real_rna, real_protein
        Real cells (same cells in both).
    synthetic_rna, synthetic_protein
        Generated cells (same cells in both).
    pairs
        ``(gene, protein)`` pairs; default: those of :func:`match_marker_pairs` present in
        both the real and the synthetic panels.
    protein_transform, method
        As in :func:`marker_correlations`.
    n_bootstrap
        Resamples of the real cells for ``real_sign_stability``.
    stable_sign
        Stability from which a real sign counts as a property of the cells
        (``real_sign_stable``).
    seed
        Seed of the resampling.

    Returns
    -------
    Columns ``gene``, ``protein``, ``real``, ``synthetic``, ``same_sign`` (``None`` where
    either correlation is NaN), ``real_significant`` (the real correlation differs from 0 at
    the 5% level, Fisher z test), ``consistent`` (the synthetic correlation does not differ
    from the real one at the 5% level: Fisher z test of two independent correlations, so an
    attenuated correlation of the right sign fails it), ``real_sign_stability`` (:func:`bootstrap_sign_stability`
    of the real cells), ``real_sign_stable`` (stability of at least ``stable_sign``) and
    ``real_gene_cells`` (real cells in which the gene is detected). The sign of a real
    correlation that is not stable is noise: a second sample of real cells has the other sign
    about as often; a correlation carried by a handful of detecting cells is fragile even when
    its sign is stable.

    Examples
    --------
    >>> compare_marker_correlations(test["rna"], test["prot"], syn["rna"], syn["prot"])
    """
    _check_same_cells(real_rna, real_protein, "real_rna", "real_protein")
    if pairs is None:
        real_pairs = set(match_marker_pairs(real_rna.var_names, real_protein.var_names))
        pairs = [
            p
            for p in match_marker_pairs(synthetic_rna.var_names, synthetic_protein.var_names)
            if p in real_pairs
        ]
    real_columns = _marker_columns(real_rna, real_protein, pairs, protein_transform)
    fake = marker_correlations(
        synthetic_rna,
        synthetic_protein,
        pairs,
        protein_transform=protein_transform,
        method=method,
    )
    out = fake[["gene", "protein"]].copy()
    out["real"] = [_correlation(x, y, method) for x, y in real_columns]
    out["synthetic"] = fake["correlation"].to_numpy()
    valid = np.isfinite(out["real"]) & np.isfinite(out["synthetic"])
    same = np.sign(out["real"]) == np.sign(out["synthetic"])
    out["same_sign"] = [bool(s) if v else None for s, v in zip(same, valid)]
    z_real = _fisher_z(out["real"])
    out["real_significant"] = np.abs(z_real) * np.sqrt(max(real_rna.n_obs - 3, 1)) > _Z_95
    # Fisher z test of two independent correlations: is the synthetic one within the
    # sampling noise of the real one (magnitude, not only sign)?
    spread = np.sqrt(1.0 / max(real_rna.n_obs - 3, 1) + 1.0 / max(synthetic_rna.n_obs - 3, 1))
    difference = np.abs(z_real - _fisher_z(out["synthetic"])) / spread
    out["consistent"] = [bool(d <= _Z_95) if v else None for d, v in zip(difference, valid)]
    signs, agreement = _sign_stabilities(real_columns, n_bootstrap, method, seed)
    out["real_sign_stability"] = np.where(np.isfinite(signs), agreement.mean(axis=0), np.nan)
    out["real_sign_stable"] = out["real_sign_stability"].to_numpy() >= stable_sign
    out["real_gene_cells"] = [int(np.count_nonzero(x)) for x, _ in real_columns]
    return out


# -------------------------------------------------------- cross-modal prediction
def _transformed(values: Any, transform: Literal["log1p", "clr", "none"]) -> np.ndarray:
    x = np.asarray(values.toarray() if sp.issparse(values) else values, dtype=np.float64)
    if transform == "log1p":
        return np.log1p(np.clip(x, 0, None))
    if transform == "clr":
        return clr_transform(np.clip(x, 0, None)).astype(np.float64)
    if transform == "none":
        return x
    raise ValueError(f"Unknown transform {transform!r}; use 'log1p', 'clr' or 'none'.")


def prediction_scores(
    observed: ad.AnnData,
    predicted: ad.AnnData | np.ndarray,
    *,
    baseline: ad.AnnData | np.ndarray | None = None,
    transform: Literal["log1p", "clr", "none"] = "log1p",
) -> pd.DataFrame:
    """Per-feature Pearson correlation and MSE of predicted against observed values.

    Parameters
    ----------
    observed
        Observed counts of held-out cells.
    predicted
        Predictions for the same cells and features (e.g. expected counts of
        :meth:`scvi_gen.CFGen.predict_modality`).
    baseline
        Optional baseline predictions: cells x features, or one value per feature (e.g. the
        training mean of each feature; its Pearson correlation is undefined, NaN).
    transform
        Applied to observed and predicted values before scoring: ``"log1p"``, ``"clr"``
        (proteins) or ``"none"``.

    Returns
    -------
    One row per feature: ``feature``, ``pearson``, ``mse`` and, with a baseline,
    ``baseline_pearson`` and ``baseline_mse``.

    Examples
    --------
    >>> pred = model.predict_modality(test, from_="rna", to="prot")
    >>> prediction_scores(test["prot"], pred, baseline=train_mean)["pearson"].mean()
    """
    obs = _transformed(get_matrix(observed), transform)
    pred_values = get_matrix(predicted) if isinstance(predicted, ad.AnnData) else predicted
    pred = _transformed(pred_values, transform)
    if pred.shape != obs.shape:
        raise ValueError(f"predicted has shape {pred.shape}, observed {obs.shape}.")
    out = pd.DataFrame({"feature": observed.var_names.astype(str)})
    out["pearson"] = [pearson(obs[:, j], pred[:, j]) for j in range(obs.shape[1])]
    out["mse"] = ((obs - pred) ** 2).mean(axis=0)
    if baseline is not None:
        values = get_matrix(baseline) if isinstance(baseline, ad.AnnData) else baseline
        values = np.asarray(values.toarray() if sp.issparse(values) else values, dtype=float)
        if values.ndim == 1:
            values = np.broadcast_to(values, obs.shape)
        base = _transformed(values, transform)
        # A constant prediction has no correlation (NaN), whatever its rounding noise.
        constant = np.ptp(values, axis=0) == 0
        out["baseline_pearson"] = [
            np.nan if constant[j] else pearson(obs[:, j], base[:, j]) for j in range(obs.shape[1])
        ]
        out["baseline_mse"] = ((obs - base) ** 2).mean(axis=0)
    return out
