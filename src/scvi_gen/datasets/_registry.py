"""Registry of the real data sets the loaders know: file name, checksum and provenance."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import MappingProxyType

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetInfo:
    """One registered data file.

    Parameters
    ----------
    name
        Registry key, also the name of the loader function.
    filename
        File name looked up in the data directories.
    sha256
        Hex SHA-256 of the exact file; every load is checked against it.
    description
        One line: what the file holds.
    url
        Direct public download of *exactly this file* (same bytes, same checksum), or ``None``
        where no such source exists. ``download=True`` only works when it is set.
    upstream
        Where the data originally come from, for users who want to rebuild the file. This is
        provenance, not a download of this file.

    Examples
    --------
    >>> from scvi_gen.datasets import DATASETS
    >>> DATASETS["pbmc3k"].filename
    'pbmc3k.h5ad'
    """

    name: str
    filename: str
    sha256: str
    description: str
    url: str | None = None
    upstream: str = ""

    @property
    def is_mudata(self) -> bool:
        """Whether the file is a MuData (``.h5mu``) container."""
        return self.filename.endswith(".h5mu")


def _entries() -> tuple[DatasetInfo, ...]:
    # Checksums copied from ../shared/data/MANIFEST.json. No registered file has a public
    # direct download of the same bytes, so ``url`` is None everywhere: the files are
    # processed subsets we made, and inventing a URL would only produce checksum errors.
    return (
        DatasetInfo(
            name="pbmc3k",
            filename="pbmc3k.h5ad",
            sha256="18aa889ac0d0eec7dceadc41a1dd5c46ef642643a3102a66de3977c3dabe9a14",
            description=(
                "10x PBMC3K: 2,700 cells x 13,714 genes (detected in >= 3 cells), integer "
                "counts; cell_type = Seurat tutorial labels (9 types, NaN for 62 cells)."
            ),
            upstream=(
                "10x Genomics pbmc3k filtered_gene_bc_matrices (hg19), "
                "https://cf.10xgenomics.com/samples/cell/pbmc3k/"
                "pbmc3k_filtered_gene_bc_matrices.tar.gz, labelled with the Seurat PBMC3K "
                "tutorial annotation. That archive is the raw matrix, not this processed file."
            ),
        ),
        DatasetInfo(
            name="pancreas",
            filename="pancreas_baron_350.h5ad",
            sha256="39750275302cc5ef0ba5fb677d87509f8b4c93a584ed09d77d727ef9e47ffa8b",
            description=(
                "Baron 2016 pancreas (inDrop): 350 cells x 12,474 genes, counts; cell_type (5), "
                "species (human/mouse), donor (6)."
            ),
            upstream="Baron et al. 2016, GEO GSE84133; the 350-cell CIDER example subset.",
        ),
        DatasetInfo(
            name="kang_ifnb",
            filename="kang_ifnb_832.h5ad",
            sha256="4dd7e185d36214955c087eff9932e8ef56eb44c7a5e160609907a58a1c60d1bb",
            description=(
                "Kang 2018 PBMC interferon-beta stimulation: 832 cells x 14,053 genes, counts; "
                "condition (CTRL/STIM), cell_type (6)."
            ),
            upstream="Kang et al. 2018 (SeuratData 'ifnb', GEO GSE96583); 832-cell subset.",
        ),
        DatasetInfo(
            name="citeseq_pbmc",
            filename="citeseq_pbmc_500.h5mu",
            sha256="16349182968fb5c7de8d6bbaf5843302234374ad78a007b4ec29c4d4f5867ef6",
            description=(
                "ECCITE-seq PBMC: 500 cells; rna 19,521 genes, prot 49 ADT, hto 4 hashtags; counts."
            ),
            upstream="Mimitou et al. 2019, GEO GSE126310 (control PBMC); CiteFuse example subset.",
        ),
        DatasetInfo(
            name="citeseq_pbmc5k",
            filename="citeseq_pbmc5k_200.h5mu",
            sha256="5fe0dc8d0c13e38d71546d9ae7c47c7d5e4c6793a86db6767308d944e19ab6cc",
            description="10x pbmc_5k_protein_v3: 200 cells; rna 16,581 genes, prot 29 ADT; counts.",
            upstream="10x Genomics pbmc_5k_protein_v3; subset shipped in scvi-tools' test data.",
        ),
        DatasetInfo(
            name="multiome_pbmc",
            filename="multiome_pbmc_1k_small.h5mu",
            sha256="8c16ed73c788e95f19a67ed7467b6903f37e3b4e7c845ca04aeb234e79f91185",
            description=(
                "10x Multiome PBMC: 1,000 cells; rna 45 genes, atac 174 peaks around them; counts."
            ),
            upstream="10x Genomics Multiome PBMC; subset shipped in muon's test data.",
        ),
    )


# Read-only so a stray assignment cannot silently change a checksum for the whole process.
DATASETS: MappingProxyType[str, DatasetInfo] = MappingProxyType({d.name: d for d in _entries()})


def get_dataset_info(name: str) -> DatasetInfo:
    """Look up a registered data set.

    Parameters
    ----------
    name
        Registry key, e.g. ``"pbmc3k"``.

    Returns
    -------
    The registry entry.

    Examples
    --------
    >>> from scvi_gen.datasets import get_dataset_info
    >>> get_dataset_info("kang_ifnb").filename
    'kang_ifnb_832.h5ad'
    """
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise KeyError(f"Unknown dataset {name!r}; registered: {known}.") from None
