from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from scvi_gen import datasets as ds
from scvi_gen.datasets import _paths

RequireData = Callable[[str], Path]
Isolate = Callable[[], Path]

SMALL = "multiome_pbmc"  # the smallest registered file (0.4 MB): cheap to copy and hash
FAKE_URL = "https://example.invalid/multiome_pbmc_1k_small.h5mu"


def _corrupt_copy(src: Path, dest: Path) -> Path:
    """Same name and size, one byte flipped near the end."""
    data = bytearray(src.read_bytes())
    data[-100] ^= 0xFF
    dest.write_bytes(bytes(data))
    return dest


def test_registry_matches_manifest(require_data: RequireData) -> None:
    manifest_path = require_data(SMALL).parent / "MANIFEST.json"
    if not manifest_path.is_file():
        pytest.skip("no MANIFEST.json next to the data files")
    manifest = json.loads(manifest_path.read_text())
    assert {info.filename for info in ds.DATASETS.values()} == set(manifest)
    for info in ds.DATASETS.values():
        assert info.sha256 == manifest[info.filename]["sha256"]
        # No invented download URLs: none of these exact files has a public source.
        assert info.url is None


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        ds.DATASETS["x"] = ds.DATASETS["pbmc3k"]  # type: ignore[index]


def test_unknown_dataset() -> None:
    with pytest.raises(KeyError, match="registered: "):
        ds.dataset_path("no_such_dataset")


def test_get_data_dir_env_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ds.DATA_DIR_ENV, str(tmp_path))
    assert ds.get_data_dir() == tmp_path
    monkeypatch.delenv(ds.DATA_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if sys.platform.startswith("linux"):
        assert ds.get_data_dir() == tmp_path / "cache" / "scvi_gen"
    assert "scvi_gen" in ds.get_data_dir().parts


def test_env_dir_is_searched_before_shared(
    require_data: RequireData, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    src = require_data("pbmc3k")
    (tmp_path / src.name).symlink_to(src)
    monkeypatch.setenv(ds.DATA_DIR_ENV, str(tmp_path))
    assert ds.dataset_path("pbmc3k") == tmp_path / src.name
    adata = ds.pbmc3k()
    assert adata.shape == (2700, 13714)


def test_data_dir_argument_wins(
    require_data: RequireData, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    src = require_data(SMALL)
    env_dir, arg_dir = tmp_path / "env", tmp_path / "arg"
    for d in (env_dir, arg_dir):
        d.mkdir()
        (d / src.name).symlink_to(src)
    monkeypatch.setenv(ds.DATA_DIR_ENV, str(env_dir))
    assert ds.dataset_path(SMALL, data_dir=arg_dir) == arg_dir / src.name


def test_explicit_path_any_name(require_data: RequireData, tmp_path: Path) -> None:
    dest = tmp_path / "renamed.h5mu"
    shutil.copy(require_data(SMALL), dest)
    assert ds.dataset_path(SMALL, path=dest) == dest
    assert ds.multiome_pbmc(path=dest).n_obs == 1000


def test_explicit_path_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.h5ad"):
        ds.pbmc3k(path=tmp_path / "nothing.h5ad")


def test_dev_fallback_finds_shared(require_data: RequireData) -> None:
    # Here the files live in <repo>/../shared/data; found without any configuration.
    shared = require_data(SMALL).parent
    if shared.name != "data" or shared.parent.name != "shared":
        pytest.skip("data not provided through a shared/data folder")
    assert [p.resolve() for p in _paths._dev_data_dirs()] == [shared.resolve()]


def test_missing_file_message(isolate_data: Isolate, tmp_path: Path) -> None:
    data_dir = isolate_data()
    extra = tmp_path / "extra"
    with pytest.raises(FileNotFoundError) as excinfo:
        ds.pbmc3k(data_dir=extra)
    msg = str(excinfo.value)
    assert str(extra / "pbmc3k.h5ad") in msg
    assert str(data_dir / "pbmc3k.h5ad") in msg
    assert ds.DATA_DIR_ENV in msg
    assert "path=" in msg
    # pbmc3k: the raw 10x archive is public; the processed file comes from a mirror or by hand.
    assert "pbmc3k_filtered_gene_bc_matrices.tar.gz" in msg
    assert ds.DATA_URL_ENV in msg


def test_download_without_url_still_explains(isolate_data: Isolate) -> None:
    isolate_data()
    with pytest.raises(FileNotFoundError, match="download=True cannot help"):
        ds.kang_ifnb(download=True)


def test_corrupt_file_raises_checksum_error(
    require_data: RequireData, isolate_data: Isolate
) -> None:
    src = require_data(SMALL)
    data_dir = isolate_data()
    bad = _corrupt_copy(src, data_dir / src.name)
    with pytest.raises(ValueError, match="Checksum mismatch") as excinfo:
        ds.multiome_pbmc()
    msg = str(excinfo.value)
    assert str(bad) in msg
    assert ds.DATASETS[SMALL].sha256 in msg
    assert _paths.sha256sum(bad) in msg
    assert "Delete it" in msg


def test_checksum_cached_until_file_changes(
    require_data: RequireData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "copy.h5mu"
    shutil.copy(require_data(SMALL), copy)
    calls: list[Path] = []
    real_sha = _paths.sha256sum

    def counting_sha(path: str | os.PathLike[str]) -> str:
        calls.append(Path(path))
        return real_sha(path)

    monkeypatch.setattr(_paths, "sha256sum", counting_sha)
    ds.dataset_path(SMALL, path=copy)
    ds.dataset_path(SMALL, path=copy)
    assert len(calls) == 1

    # Rewrite in place with the same size; a new mtime must force a fresh hash.
    _corrupt_copy(copy, copy)
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(ValueError, match="Checksum mismatch"):
        ds.dataset_path(SMALL, path=copy)
    assert len(calls) == 2


def test_download_with_fake_fetcher(
    require_data: RequireData, isolate_data: Isolate, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = require_data(SMALL)
    data_dir = isolate_data()
    info = replace(ds.DATASETS[SMALL], url=FAKE_URL)
    fetched: list[str] = []

    def fake_fetch(url: str, dest: Path) -> None:
        fetched.append(url)
        shutil.copy(src, dest)

    monkeypatch.setattr(_paths, "_fetch_url", fake_fetch)
    with pytest.raises(FileNotFoundError, match="download=True to fetch it from"):
        ds.dataset_path(info)
    got = ds.dataset_path(info, download=True)
    assert got == data_dir / info.filename
    assert fetched == [FAKE_URL]
    assert sorted(p.name for p in data_dir.iterdir()) == [info.filename]  # no .part left
    # Present now: no second download.
    assert ds.dataset_path(info, download=True) == got
    assert fetched == [FAKE_URL]


def test_download_bad_checksum_leaves_nothing(
    isolate_data: Isolate, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate_data()
    target = tmp_path / "downloads"
    info = replace(ds.DATASETS[SMALL], url=FAKE_URL)

    def fake_fetch(url: str, dest: Path) -> None:
        dest.write_bytes(b"<html>not the file</html>")

    monkeypatch.setattr(_paths, "_fetch_url", fake_fetch)
    with pytest.raises(ValueError, match="Checksum mismatch"):
        ds.dataset_path(info, data_dir=target, download=True)
    assert list(target.iterdir()) == []


def test_require_data_skips_locally_fails_in_ci(
    isolate_data: Isolate, require_data: RequireData, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate_data()
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_data("pbmc3k")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_data("pbmc3k")
