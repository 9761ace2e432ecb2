"""Tests for the streaming writer of generated cells."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

import anndata
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import zarr

from scvi_gen.base import GenerationWriter, is_complete, read_generated

N_OBS, N_VARS, N_CHUNKS = 40, 7, 4
FORMATS = [".h5ad", ".zarr"]


def _inputs(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, list[sp.csr_matrix]]:
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(rng.choice(["B", "T", "NK"], N_OBS)),
            "batch": pd.Categorical(rng.choice(["b0", "b1"], N_OBS)),
            "size_factor": rng.random(N_OBS),
        },
        index=[f"gen_{i}" for i in range(N_OBS)],
    )
    var = pd.DataFrame(
        {"gene_ids": [f"ENSG{i:04d}" for i in range(N_VARS)]},
        index=[f"g{i}" for i in range(N_VARS)],
    )
    X = sp.random(N_OBS, N_VARS, density=0.4, format="csr", dtype=np.float32, random_state=seed)
    X.data = np.round(X.data * 10).astype(np.float32) + 1
    step = N_OBS // N_CHUNKS
    chunks = [X[i : i + step] for i in range(0, N_OBS, step)]
    return obs, var, chunks


def _writer(
    path: Path, obs, var, *, key: str = "k1", layers=(), resume: bool = False
) -> GenerationWriter:
    return GenerationWriter(
        path,
        obs=obs,
        var=var,
        uns={"scvi_gen": {"model": "CFGen"}},
        layers=layers,
        resume=resume,
        key=key,
    )


def _write_all(path: Path, obs, var, chunks, *, layers=()) -> None:
    w = _writer(path, obs, var, layers=layers)
    for c in chunks:
        w.append(c, dict.fromkeys(layers, c * 2))
    w.finish()


def _open(path: Path):
    return h5py.File(path, "r") if path.suffix == ".h5ad" else zarr.open_group(path, mode="r")


def _raw_x(path: Path, key: str = "X") -> dict[str, np.ndarray]:
    f = _open(path)
    try:
        return {
            name: np.asarray(f[f"{key}/{name}"][...]) for name in ("data", "indices", "indptr")
        }
    finally:
        if isinstance(f, h5py.File):
            f.close()


def _tear(path: Path, *, extra_rows: bool = False) -> None:
    """Simulate a kill inside append: debris past the committed rows."""
    f = h5py.File(path, "r+") if path.suffix == ".h5ad" else zarr.open_group(path, mode="r+")
    try:
        g = f["X"]
        for name, junk in (("data", 99.0), ("indices", 3)):
            n = g[name].shape[0]
            g[name].resize((n + 5,))
            g[name][n:] = junk
        if extra_rows:
            # anndata's append grows `shape` and `indptr` before `indices`.
            n = g["indptr"].shape[0]
            g["indptr"].resize((n + 2,))
            g["indptr"][n:] = g["indptr"][n - 1] + np.array([2, 5])
            g.attrs["shape"] = (int(g.attrs["shape"][0]) + 2, N_VARS)
    finally:
        if isinstance(f, h5py.File):
            f.close()


@pytest.mark.parametrize("suffix", FORMATS)
def test_roundtrip_matches_in_memory(tmp_path: Path, suffix: str) -> None:
    obs, var, chunks = _inputs()
    path = tmp_path / f"cells{suffix}"
    w = _writer(path, obs, var)
    assert w.n_written == 0
    for c in chunks:
        w.append(c)
    assert w.n_written == N_OBS
    w.finish()
    w.finish()  # idempotent
    assert is_complete(path)

    expected = anndata.AnnData(X=sp.vstack(chunks).tocsr(), obs=obs, var=var)
    got = read_generated(path, backed=False)
    assert sp.issparse(got.X)
    np.testing.assert_array_equal(got.X.toarray(), expected.X.toarray())
    assert got.X.dtype == np.float32
    assert got.X.indptr.dtype == got.X.indices.dtype == np.int64
    pd.testing.assert_frame_equal(got.obs, expected.obs)
    assert isinstance(got.obs["cell_type"].dtype, pd.CategoricalDtype)
    assert list(got.var_names) == list(expected.var_names)
    assert got.uns["scvi_gen"]["complete"]
    assert got.uns["scvi_gen"]["generation_key"] == "k1"
    assert got.uns["scvi_gen"]["model"] == "CFGen"

    import scanpy as sc

    qc_obs, _ = sc.pp.calculate_qc_metrics(got, percent_top=[2], inplace=False)
    np.testing.assert_allclose(qc_obs["total_counts"], np.asarray(expected.X.sum(1)).ravel())

    if suffix == ".h5ad":
        backed = read_generated(path)
        assert backed.isbacked
        np.testing.assert_array_equal(backed.X[5:15].toarray(), expected.X[5:15].toarray())
        backed.file.close()
        direct = anndata.read_h5ad(path, backed="r")
        assert direct.shape == (N_OBS, N_VARS)
        direct.file.close()
        assert sc.read_h5ad(path).shape == (N_OBS, N_VARS)
        with h5py.File(path, "r") as f:
            assert f.attrs["encoding-type"] == "anndata"
            assert {"obsm", "varm", "obsp", "varp", "layers"} <= set(f.keys())
    else:
        assert anndata.read_zarr(path).shape == (N_OBS, N_VARS)


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("extra_rows", [False, True])
def test_interrupted_resume_is_identical(tmp_path: Path, suffix: str, extra_rows: bool) -> None:
    obs, var, chunks = _inputs()
    ref = tmp_path / f"ref{suffix}"
    _write_all(ref, obs, var, chunks)

    path = tmp_path / f"cells{suffix}"
    w = _writer(path, obs, var)
    w.append(chunks[0])
    w.append(chunks[1])
    del w  # dropped without finish()
    gc.collect()
    _tear(path, extra_rows=extra_rows)
    assert not is_complete(path)

    w = _writer(path, obs, var, resume=True)
    n_done = chunks[0].shape[0] + chunks[1].shape[0]
    assert w.n_written == n_done
    for c in chunks[2:]:
        w.append(c)
    w.finish()

    got, want = _raw_x(path), _raw_x(ref)
    for name in ("data", "indices", "indptr"):
        assert got[name].dtype == want[name].dtype
        np.testing.assert_array_equal(got[name], want[name])
    pd.testing.assert_frame_equal(
        read_generated(path, backed=False).obs, read_generated(ref, backed=False).obs
    )


def test_killed_process_resumes(tmp_path: Path) -> None:
    """A real kill (no close, no finally) after two chunks resumes cleanly."""
    obs, var, chunks = _inputs()
    path = tmp_path / "cells.h5ad"
    obs.to_pickle(tmp_path / "obs.pkl")
    var.to_pickle(tmp_path / "var.pkl")
    sp.save_npz(tmp_path / "X.npz", sp.vstack(chunks).tocsr())
    step = chunks[0].shape[0]
    script = textwrap.dedent(
        f"""
        import os, pandas as pd, scipy.sparse as sp
        from scvi_gen.base import GenerationWriter
        d = {str(tmp_path)!r}
        X = sp.load_npz(d + "/X.npz")
        w = GenerationWriter(d + "/cells.h5ad", obs=pd.read_pickle(d + "/obs.pkl"),
                             var=pd.read_pickle(d + "/var.pkl"), uns={{"scvi_gen": {{}}}}, key="k1")
        w.append(X[:{step}])
        w.append(X[{step}:{2 * step}])
        os._exit(1)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1, proc.stderr
    w = GenerationWriter(path, obs=obs, var=var, uns={"scvi_gen": {}}, resume=True, key="k1")
    assert w.n_written == 2 * step
    for c in chunks[2:]:
        w.append(c)
    w.finish()
    np.testing.assert_array_equal(
        read_generated(path, backed=False).X.toarray(), sp.vstack(chunks).toarray()
    )


@pytest.mark.parametrize("suffix", FORMATS)
def test_unfinished_store_is_refused(tmp_path: Path, suffix: str) -> None:
    obs, var, chunks = _inputs()
    path = tmp_path / f"cells{suffix}"
    assert not is_complete(path)  # missing
    w = _writer(path, obs, var)
    w.append(chunks[0])
    assert not is_complete(path)
    with pytest.raises(ValueError, match="Cannot finish"):
        w.finish()
    w.close()
    n = chunks[0].shape[0]
    with pytest.raises(ValueError, match=rf"{n} of {N_OBS} cells") as err:
        read_generated(path)
    assert str(path) in str(err.value)
    assert "resume with model.generate(..., out=path, resume=True)" in str(err.value)

    w = _writer(path, obs, var, resume=True)
    for c in chunks[1:]:
        w.append(c)
    w.finish()
    assert is_complete(path)


@pytest.mark.parametrize("suffix", FORMATS)
def test_existing_path_and_other_call_are_refused(tmp_path: Path, suffix: str) -> None:
    obs, var, chunks = _inputs()
    path = tmp_path / f"cells{suffix}"
    _writer(path, obs, var).close()
    with pytest.raises(FileExistsError, match="resume=True") as err:
        _writer(path, obs, var)
    assert str(path) in str(err.value) and "another path" in str(err.value)
    with pytest.raises(ValueError, match="another generation call.*generation key"):
        _writer(path, obs, var, key="other", resume=True)
    other_obs = obs.copy()
    other_obs["cell_type"] = other_obs["cell_type"].cat.set_categories(["B", "T", "NK", "DC"])
    other_obs.iloc[0, 0] = "DC"
    with pytest.raises(ValueError, match="another generation call.*obs"):
        _writer(path, other_obs, var, resume=True)
    with pytest.raises(ValueError, match="another generation call.*var"):
        _writer(path, obs, var.rename(index=lambda s: s + "x"), resume=True)
    # Refusals leave the store intact and resumable.
    w = _writer(path, obs, var, resume=True)
    assert w.n_written == 0
    w.close()


@pytest.mark.parametrize("suffix", FORMATS)
def test_resume_complete_store_is_noop(tmp_path: Path, suffix: str) -> None:
    obs, var, chunks = _inputs()
    path = tmp_path / f"cells{suffix}"
    _write_all(path, obs, var, chunks)
    before = _raw_x(path)
    w = _writer(path, obs, var, resume=True)
    assert w.n_written == N_OBS
    with pytest.raises(RuntimeError, match="already finished"):
        w.append(chunks[0])
    w.finish()
    assert is_complete(path)
    after = _raw_x(path)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])


def test_missing_file_with_resume_starts_new(tmp_path: Path) -> None:
    obs, var, _ = _inputs()
    w = _writer(tmp_path / "cells.h5ad", obs, var, resume=True)
    assert w.n_written == 0
    w.close()


@pytest.mark.parametrize("suffix", FORMATS)
def test_layers_are_appended(tmp_path: Path, suffix: str) -> None:
    obs, var, chunks = _inputs()
    path = tmp_path / f"cells{suffix}"
    w = _writer(path, obs, var, layers=["counts"])
    with pytest.raises(ValueError, match="layers"):
        w.append(chunks[0])
    w.append(chunks[0], {"counts": chunks[0] * 2})
    w.append(chunks[1], {"counts": chunks[1] * 2})
    del w
    gc.collect()
    # Torn layer chunk: written before X, then killed.
    f = h5py.File(path, "r+") if suffix == ".h5ad" else zarr.open_group(path, mode="r+")
    g = f["layers/counts"]
    n = g["data"].shape[0]
    g["data"].resize((n + 3,))
    if isinstance(f, h5py.File):
        f.close()
    w = _writer(path, obs, var, layers=["counts"], resume=True)
    for c in chunks[2:]:
        w.append(c, {"counts": c * 2})
    w.finish()
    got = read_generated(path, backed=False)
    X = sp.vstack(chunks).toarray()
    np.testing.assert_array_equal(got.X.toarray(), X)
    np.testing.assert_array_equal(got.layers["counts"].toarray(), 2 * X)
    ref = tmp_path / f"ref{suffix}"
    _write_all(ref, obs, var, chunks, layers=["counts"])
    for name, arr in _raw_x(ref, "layers/counts").items():
        np.testing.assert_array_equal(_raw_x(path, "layers/counts")[name], arr)
