"""Loaders that build data sets from public upstream sources (scanpy, 10x), served locally."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from scvi_gen import datasets as ds

Isolate = Callable[[], Path]
Serve = Callable[[Path], str]


def _tiny_10x_archive(counts: np.ndarray, barcodes: list[str], genes: list[str]) -> bytes:
    """A ``filtered_gene_bc_matrices/hg19`` tarball in Cell Ranger 1.x layout."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        mtx = io.BytesIO()
        scipy.io.mmwrite(mtx, sp.coo_matrix(counts.T))  # genes x cells
        files = {
            "matrix.mtx": mtx.getvalue(),
            "genes.tsv": "".join(f"ENSG{i:05d}\t{g}\n" for i, g in enumerate(genes)).encode(),
            "barcodes.tsv": "".join(f"{b}\n" for b in barcodes).encode(),
        }
        for name, data in files.items():
            info = tarfile.TarInfo(f"filtered_gene_bc_matrices/hg19/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def pbmc68k_mirror(tmp_path: Path, http_server: Serve) -> tuple[str, np.ndarray]:
    rng = np.random.default_rng(0)
    counts = rng.poisson(1.0, size=(6, 4)).astype(np.float32)
    barcodes = [f"AAAC{i}-1" for i in range(6)]
    root = tmp_path / "mirror"
    (root / "files").mkdir(parents=True)
    archive = ds.PBMC68K_MATRIX_URL.rsplit("/", 1)[1]
    labels = ds.PBMC68K_ANNOTATION_URL.rsplit("/", 1)[1]
    (root / "files" / archive).write_bytes(
        _tiny_10x_archive(counts, barcodes, ["CD3E", "MS4A1", "LYZ", "NKG7"])
    )
    table = pd.DataFrame(
        {"TSNE.1": 0.0, "TSNE.2": 0.0, "barcodes": barcodes[:5], "celltype": list("TTBBN")}
    )
    table.to_csv(root / "files" / labels, sep="\t", index=False)
    return http_server(root), counts


def test_pbmc68k_is_built_from_the_upstream_files(
    isolate_data: Isolate, pbmc68k_mirror: tuple[str, np.ndarray]
) -> None:
    data_dir = isolate_data()
    base_url, counts = pbmc68k_mirror
    with pytest.raises(FileNotFoundError, match="download=True"):
        ds.pbmc68k()
    adata = ds.pbmc68k(download=True, base_url=base_url)
    np.testing.assert_array_equal(adata.X.toarray(), counts)
    assert list(adata.var_names) == ["CD3E", "MS4A1", "LYZ", "NKG7"]
    assert adata.obs["cell_type"].astype(str).tolist()[:5] == list("TTBBN")
    assert pd.isna(adata.obs["cell_type"].iloc[5])  # a barcode without a published type
    recorded = sorted(p.name for p in data_dir.rglob("*.sha256"))
    assert len(recorded) == 3  # both upstream files and the built file
    # Built once: the next load reads pbmc68k.h5ad without the network.
    assert ds.pbmc68k().n_obs == 6


def test_a_built_file_that_changed_is_refused(
    isolate_data: Isolate, pbmc68k_mirror: tuple[str, np.ndarray]
) -> None:
    data_dir = isolate_data()
    ds.pbmc68k(download=True, base_url=pbmc68k_mirror[0])
    built = data_dir / "pbmc68k.h5ad"
    data = bytearray(built.read_bytes())
    data[-10] ^= 0xFF
    built.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="recorded sha256"):
        ds.pbmc68k()


def test_an_upstream_file_that_does_not_parse_is_not_kept(
    isolate_data: Isolate, tmp_path: Path, http_server: Serve
) -> None:
    data_dir = isolate_data()
    root = tmp_path / "mirror"
    (root / "files").mkdir(parents=True)
    for url in (ds.PBMC68K_MATRIX_URL, ds.PBMC68K_ANNOTATION_URL):
        (root / "files" / url.rsplit("/", 1)[1]).write_bytes(b"<html>moved</html>")
    with pytest.raises(ValueError, match="Could not build pbmc68k"):
        ds.pbmc68k(download=True, base_url=http_server(root))
    assert [p for p in data_dir.rglob("*") if p.is_file()] == []


def test_hca_bm10k_explains_the_manual_step(isolate_data: Isolate) -> None:
    isolate_data()
    with pytest.raises(FileNotFoundError, match="data.humancellatlas.org"):
        ds.hca_bm10k()


def test_hca_bm10k_reads_a_file_with_counts_and_cell_types(tmp_path: Path) -> None:
    adata = ad.AnnData(sp.csr_matrix(np.array([[1.0, 0.0], [2.0, 3.0]], dtype=np.float32)))
    adata.obs["cell_type"] = ["HSC", "B"]
    adata.write_h5ad(tmp_path / "hca_bm10k.h5ad")
    loaded = ds.hca_bm10k(path=tmp_path / "hca_bm10k.h5ad")
    assert loaded.obs["cell_type"].dtype == "category"
    del adata.obs["cell_type"]
    adata.write_h5ad(tmp_path / "no_types.h5ad")
    with pytest.raises(ValueError, match="no obs\\['cell_type'\\]"):
        ds.hca_bm10k(path=tmp_path / "no_types.h5ad")


def test_hca_bm10k_refuses_normalised_values(tmp_path: Path) -> None:
    adata = ad.AnnData(sp.csr_matrix(np.array([[0.5, 0.0]], dtype=np.float32)))
    adata.obs["cell_type"] = ["B"]
    adata.write_h5ad(tmp_path / "hca_bm10k.h5ad")
    with pytest.raises(ValueError, match="raw integer counts"):
        ds.hca_bm10k(path=tmp_path / "hca_bm10k.h5ad")


def test_pbmc3k_scanpy_builds_from_scanpys_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    import scanpy as sc

    counts = np.array([[1, 0, 2], [3, 0, 0], [1, 1, 0], [2, 0, 1]], dtype=np.float32)
    raw = ad.AnnData(sp.csr_matrix(counts))
    raw.obs_names = ["c0", "c1", "c2", "c3"]
    raw.var_names = ["A", "B", "C"]
    processed = ad.AnnData(np.zeros((3, 1), dtype=np.float32))
    processed.obs_names = ["c0", "c1", "c3"]
    processed.obs["louvain"] = pd.Categorical(["B cells", "NK cells", "Megakaryocytes"])
    monkeypatch.setattr(sc.datasets, "pbmc3k", lambda: raw)
    monkeypatch.setattr(sc.datasets, "pbmc3k_processed", lambda: processed)
    adata = ds.pbmc3k_scanpy()
    assert list(adata.var_names) == ["A"]  # the only gene detected in >= 3 cells
    labels = adata.obs["cell_type"].astype(object).where(adata.obs["cell_type"].notna(), None)
    assert labels.tolist() == ["B", "NK", None, "Platelet"]
