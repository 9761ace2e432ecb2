"""Loaders for the registered real data sets and scanpy's bundled ``pbmc68k_reduced``."""

from __future__ import annotations

import logging
import os
import textwrap
from collections.abc import Callable
from typing import TypeVar

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp
from mudata import MuData

from scvi_gen._settings import quiet_mudata

from ._paths import dataset_path

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
_F = TypeVar("_F", bound=Callable[..., object])

# Relative tolerance of the pbmc68k_reduced count reconstruction, as a fraction of the count
# (floor 1). scanpy stores raw.X rounded to 3 decimals, so expm1(raw.X) carries a relative
# error up to 5e-4 * (1 + 1 / expm1(raw.X)) <= 9.8e-4 here (n_counts >= 2141). Measured with
# scanpy 1.11: max |x - round(x)| / max(round(x), 1) = 7.6e-4, max absolute deviation 0.082
# (at a count of 213). 2e-3 covers the bound. Rounding is unambiguous: at the largest count,
# 259, the storage error is at most ~0.13, far from 0.5. A wrong library size or target sum
# shifts every value by a constant factor and fails the check.
PBMC68K_RTOL = 2e-3
_PBMC68K_TARGET_SUM = 1e4

_LOADER_PARAMS = """\
path
    Explicit local file; skips the search. It must still match the registry checksum.
data_dir
    Directory searched first, before :func:`get_data_dir` (``$SCVI_GEN_DATA_DIR`` or the user
    cache) and the development ``shared/data`` folder; also where ``download=True`` saves.
download
    Fetch the file when it is found nowhere, from the mirror ``base_url`` (or
    ``$SCVI_GEN_DATA_URL``) holding the registered files under their names; the download is
    checked against the registry SHA-256 (a mismatch is refused and nothing is kept).
base_url
    Mirror base URL for ``download`` (e.g. a lab server with a copy of the data files)."""

_LOADER_RAISES = """\
FileNotFoundError
    The file was not found; the message lists the searched paths and where to put it.
ConnectionError
    ``download=True`` could not reach the mirror.
ValueError
    The file does not match the registry SHA-256."""


def _loader_doc(func: _F) -> _F:
    """Fill the shared Parameters / Raises text into a loader docstring."""
    doc = func.__doc__ or ""
    for key, text in (("{params}", _LOADER_PARAMS), ("{raises}", _LOADER_RAISES)):
        doc = doc.replace(key, textwrap.indent(text, "    ").lstrip())
    func.__doc__ = doc
    return func


def _categorize(df: pd.DataFrame) -> None:
    """Turn string columns into pandas categoricals, in place (NaN stays missing)."""
    for col in df.columns:
        dtype = df[col].dtype
        if isinstance(dtype, pd.CategoricalDtype):
            continue
        if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            df[col] = df[col].astype("category")


def _tidy(adata: ad.AnnData) -> None:
    """Counts as CSR in ``.X`` (no copy when already CSR) and categorical string obs."""
    if not (sp.issparse(adata.X) and adata.X.format == "csr"):
        adata.X = sp.csr_matrix(adata.X)
    _categorize(adata.obs)


def _load_anndata(
    name: str,
    path: PathLike | None,
    data_dir: PathLike | None,
    download: bool,
    base_url: str | None,
) -> ad.AnnData:
    file = dataset_path(name, path=path, data_dir=data_dir, download=download, base_url=base_url)
    adata = ad.read_h5ad(file)
    _tidy(adata)
    return adata


def _load_mudata(
    name: str,
    path: PathLike | None,
    data_dir: PathLike | None,
    download: bool,
    base_url: str | None,
) -> MuData:
    file = dataset_path(name, path=path, data_dir=data_dir, download=download, base_url=base_url)
    with quiet_mudata():
        mdata = md.read_h5mu(file)
    for modality in mdata.mod.values():
        _tidy(modality)
    _categorize(mdata.obs)
    return mdata


@_loader_doc
def pbmc3k(
    path: PathLike | None = None,
    data_dir: PathLike | None = None,
    download: bool = False,
    base_url: str | None = None,
) -> ad.AnnData:
    """10x PBMC3K with the Seurat tutorial cell types.

    2,700 cells x 13,714 genes (those detected in >= 3 cells) from 10x Genomics'
    ``pbmc3k_filtered_gene_bc_matrices`` (hg19). ``.X`` holds the integer UMI counts (CSR,
    float32), ``obs["cell_type"]`` the 9 Seurat PBMC3K tutorial labels (``Naive CD4 T``,
    ``Memory CD4 T``, ``CD14+ Mono``, ``B``, ``CD8 T``, ``FCGR3A+ Mono``, ``NK``, ``DC``,
    ``Platelet``; NaN for the 62 cells that fail the tutorial's QC), ``var["gene_ids"]`` the
    Ensembl ids. The raw matrix is public (10x), this labelled file is ours: place it in the
    data directory.

    Parameters
    ----------
    {params}

    Returns
    -------
    AnnData with counts in ``.X``.

    Raises
    ------
    {raises}

    Examples
    --------
    >>> import scvi_gen
    >>> adata = scvi_gen.datasets.pbmc3k()  # doctest: +SKIP
    >>> adata.obs["cell_type"].value_counts()  # doctest: +SKIP
    """
    return _load_anndata("pbmc3k", path, data_dir, download, base_url)


@_loader_doc
def pancreas(
    path: PathLike | None = None,
    data_dir: PathLike | None = None,
    download: bool = False,
    base_url: str | None = None,
) -> ad.AnnData:
    """Baron et al. 2016 pancreas (inDrop), human and mouse, 350 cells.

    The CIDER example subset of GEO GSE84133: 350 cells x 12,474 genes, counts in ``.X`` (CSR,
    float32). ``obs``: ``cell_type`` (``activated_stellate``, ``alpha``, ``beta``, ``delta``,
    ``macrophage``), ``species`` (``human``/``mouse``) and ``donor`` (4 human, 2 mouse), all
    categorical. Useful for conditioning on cell type and species together.

    Parameters
    ----------
    {params}

    Returns
    -------
    AnnData with counts in ``.X``.

    Raises
    ------
    {raises}

    Examples
    --------
    >>> import scvi_gen
    >>> adata = scvi_gen.datasets.pancreas()  # doctest: +SKIP
    >>> adata.obs[["cell_type", "species"]].value_counts()  # doctest: +SKIP
    """
    return _load_anndata("pancreas", path, data_dir, download, base_url)


@_loader_doc
def kang_ifnb(
    path: PathLike | None = None,
    data_dir: PathLike | None = None,
    download: bool = False,
    base_url: str | None = None,
) -> ad.AnnData:
    """Kang et al. 2018 PBMC interferon-beta stimulation, 832 cells.

    Subset of SeuratData's ``ifnb`` (GEO GSE96583) with raw counts: 832 cells x 14,053 genes,
    counts in ``.X`` (CSR, float32). ``obs["condition"]`` is ``CTRL`` or ``STIM``,
    ``obs["cell_type"]`` the Seurat annotation (``B``, ``CD14 Mono``, ``CD16 Mono``,
    ``CD4 Memory T``, ``CD4 Naive T``, ``CD8 T``). The data set for perturbation-style
    generation (condition x cell type).

    Parameters
    ----------
    {params}

    Returns
    -------
    AnnData with counts in ``.X``.

    Raises
    ------
    {raises}

    Examples
    --------
    >>> import pandas as pd
    >>> import scvi_gen
    >>> adata = scvi_gen.datasets.kang_ifnb()  # doctest: +SKIP
    >>> pd.crosstab(adata.obs["cell_type"], adata.obs["condition"])  # doctest: +SKIP
    """
    return _load_anndata("kang_ifnb", path, data_dir, download, base_url)


@_loader_doc
def citeseq_pbmc(
    path: PathLike | None = None,
    data_dir: PathLike | None = None,
    download: bool = False,
    base_url: str | None = None,
) -> MuData:
    """ECCITE-seq PBMC (Mimitou et al. 2019), 500 cells, RNA + protein + hashtags.

    The CiteFuse example subset of GEO GSE126310 (control PBMC). Modalities, all counts in
    ``.X`` (CSR, float32): ``rna`` (19,521 genes, ``hg19_`` prefixed names), ``prot``
    (49 antibody-derived tags) and ``hto`` (4 hashtag oligos). No cell-type labels.

    Parameters
    ----------
    {params}

    Returns
    -------
    MuData with modalities ``rna``, ``prot`` and ``hto``.

    Raises
    ------
    {raises}

    Examples
    --------
    >>> import scvi_gen
    >>> mdata = scvi_gen.datasets.citeseq_pbmc()  # doctest: +SKIP
    >>> mdata["prot"].shape  # doctest: +SKIP
    (500, 49)
    """
    return _load_mudata("citeseq_pbmc", path, data_dir, download, base_url)


@_loader_doc
def citeseq_pbmc5k(
    path: PathLike | None = None,
    data_dir: PathLike | None = None,
    download: bool = False,
    base_url: str | None = None,
) -> MuData:
    """10x ``pbmc_5k_protein_v3`` CITE-seq, 200 cells, RNA + protein.

    The subset shipped with scvi-tools' test data. Modalities, counts in ``.X`` (CSR,
    float32): ``rna`` (16,581 genes; ``var`` keeps ``n_cells`` and ``highly_variable``) and
    ``prot`` (29 TotalSeq-B antibodies). No cell-type labels.

    Parameters
    ----------
    {params}

    Returns
    -------
    MuData with modalities ``rna`` and ``prot``.

    Raises
    ------
    {raises}

    Examples
    --------
    >>> import scvi_gen
    >>> mdata = scvi_gen.datasets.citeseq_pbmc5k()  # doctest: +SKIP
    >>> list(mdata.mod)  # doctest: +SKIP
    ['rna', 'prot']
    """
    return _load_mudata("citeseq_pbmc5k", path, data_dir, download, base_url)


@_loader_doc
def multiome_pbmc(
    path: PathLike | None = None,
    data_dir: PathLike | None = None,
    download: bool = False,
    base_url: str | None = None,
) -> MuData:
    """10x Multiome PBMC (RNA + ATAC), 1,000 cells, a small gene/peak panel.

    The subset shipped with muon's test data: ``rna`` (45 genes) and ``atac`` (174 peaks
    around those genes), counts in ``.X`` (CSR, float32); ``var`` holds ``gene_ids``,
    ``feature_types``, ``genome`` (GRCh38) and ``interval``. Small enough for fast multimodal
    tests. No cell-type labels.

    Parameters
    ----------
    {params}

    Returns
    -------
    MuData with modalities ``rna`` and ``atac``.

    Raises
    ------
    {raises}

    Examples
    --------
    >>> import scvi_gen
    >>> mdata = scvi_gen.datasets.multiome_pbmc()  # doctest: +SKIP
    >>> mdata["atac"].shape  # doctest: +SKIP
    (1000, 174)
    """
    return _load_mudata("multiome_pbmc", path, data_dir, download, base_url)


def pbmc68k_reduced() -> ad.AnnData:
    """The ``pbmc68k_reduced`` data bundled with scanpy, with its integer counts rebuilt.

    700 cells x 765 genes from 10x PBMC 68k, shipped inside scanpy (no download). scanpy
    stores ``raw.X = log1p(counts / n_counts * 1e4)``, so the counts are
    ``round(expm1(raw.X) * n_counts / 1e4)``. The reconstruction is checked: every entry must
    lie within ``PBMC68K_RTOL`` (2e-3) of an integer, relative to the count (floor 1); the
    measured worst case is 7.6e-4 (0.082 absolute), because scanpy stores ``raw.X`` rounded
    to 3 decimals.

    ``obs["n_counts"]`` is the library size over *all* genes of the original data, not the
    row sum of these 765 genes (row sums are 11-28 % of it). ``obs["cell_type"]`` is a copy of
    the 10 ``bulk_labels`` (kept too); ``var`` is ``raw.var``.

    Returns
    -------
    AnnData with counts in ``.X`` (CSR, float32) and ``uns["source"]``.

    Raises
    ------
    ValueError
        If the rebuilt values are not integers within tolerance (a changed scanpy file).

    Examples
    --------
    >>> import scvi_gen
    >>> adata = scvi_gen.datasets.pbmc68k_reduced()
    >>> adata.shape
    (700, 765)
    """
    import scanpy as sc

    bundled = sc.datasets.pbmc68k_reduced()
    counts = _counts_from_log1p(
        bundled.raw.X, bundled.obs["n_counts"].to_numpy(), _PBMC68K_TARGET_SUM, PBMC68K_RTOL
    )
    obs = bundled.obs.copy()
    obs["cell_type"] = obs["bulk_labels"].astype("category")
    _categorize(obs)
    adata = ad.AnnData(X=counts, obs=obs, var=bundled.raw.var.copy())
    adata.uns["source"] = (
        "scanpy.datasets.pbmc68k_reduced (10x PBMC 68k subset); counts rebuilt as "
        "round(expm1(raw.X) * n_counts / 1e4)"
    )
    return adata


def _counts_from_log1p(
    log_norm: sp.spmatrix | np.ndarray, library_size: np.ndarray, target_sum: float, rtol: float
) -> sp.csr_matrix:
    """Invert ``log1p(counts / library_size * target_sum)`` and check the result is integral."""
    mat = sp.csr_matrix(log_norm, dtype=np.float64)
    # Row index of every stored entry, so only non-zeros are touched.
    rows = np.repeat(np.arange(mat.shape[0]), np.diff(mat.indptr))
    values = np.expm1(mat.data) * np.asarray(library_size, dtype=np.float64)[rows] / target_sum
    rounded = np.rint(values)
    rel_dev = np.abs(values - rounded) / np.maximum(rounded, 1.0)
    worst = float(rel_dev.max(initial=0.0))
    if worst > rtol:
        raise ValueError(
            f"Rebuilt counts are not integers: max relative deviation {worst:.3g} > {rtol:g}. "
            "The log-normalised data or library sizes are not what this loader expects."
        )
    logger.debug("Count reconstruction: max relative deviation from integers %.3g", worst)
    counts = sp.csr_matrix((rounded.astype(np.float32), mat.indices, mat.indptr), shape=mat.shape)
    counts.eliminate_zeros()
    return counts
