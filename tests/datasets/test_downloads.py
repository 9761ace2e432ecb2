"""Every loader downloads its file from a mirror over HTTP and keeps it only when it verifies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from scvi_gen import datasets as ds

RequireData = Callable[[str], Path]
Isolate = Callable[[], Path]
Serve = Callable[[Path], str]

LOADERS = {
    "pbmc3k": ds.pbmc3k,
    "pancreas": ds.pancreas,
    "kang_ifnb": ds.kang_ifnb,
    "citeseq_pbmc": ds.citeseq_pbmc,
    "citeseq_pbmc5k": ds.citeseq_pbmc5k,
    "multiome_pbmc": ds.multiome_pbmc,
}


def _mirror(tmp_path: Path, files: dict[str, bytes]) -> Path:
    """A served directory: files live under ``<root>/files/`` (the URL path of the server)."""
    root = tmp_path / "mirror"
    (root / "files").mkdir(parents=True)
    for name, data in files.items():
        (root / "files" / name).write_bytes(data)
    return root


def test_every_registered_loader_is_covered() -> None:
    assert set(LOADERS) == set(ds.DATASETS)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_loader_downloads_from_a_mirror_and_verifies(
    name: str,
    require_data: RequireData,
    isolate_data: Isolate,
    http_server: Serve,
    tmp_path: Path,
) -> None:
    src = require_data(name)
    data_dir = isolate_data()
    base_url = http_server(_mirror(tmp_path, {src.name: src.read_bytes()}))
    with pytest.raises(FileNotFoundError, match="not found"):
        LOADERS[name]()
    loaded = LOADERS[name](download=True, base_url=base_url)
    assert loaded.n_obs > 0
    got = data_dir / src.name
    assert ds.sha256sum(got) == ds.DATASETS[name].sha256
    assert sorted(p.name for p in data_dir.iterdir()) == [src.name]  # no partial file left


def test_mirror_from_the_environment_variable(
    require_data: RequireData,
    isolate_data: Isolate,
    http_server: Serve,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = require_data("multiome_pbmc")
    isolate_data()
    monkeypatch.setenv(
        ds.DATA_URL_ENV, http_server(_mirror(tmp_path, {src.name: src.read_bytes()}))
    )
    assert ds.multiome_pbmc(download=True).n_obs == 1000


def test_corrupt_download_is_refused_and_removed(
    require_data: RequireData, isolate_data: Isolate, http_server: Serve, tmp_path: Path
) -> None:
    src = require_data("multiome_pbmc")
    data_dir = isolate_data()
    data = bytearray(src.read_bytes())
    data[-100] ^= 0xFF
    base_url = http_server(_mirror(tmp_path, {src.name: bytes(data)}))
    with pytest.raises(ValueError, match="Refused the download from http://127.0.0.1"):
        ds.multiome_pbmc(download=True, base_url=base_url)
    assert list(data_dir.iterdir()) == []


def test_missing_file_on_the_mirror_is_a_connection_error_naming_the_url(
    isolate_data: Isolate, http_server: Serve, tmp_path: Path
) -> None:
    data_dir = isolate_data()
    base_url = http_server(_mirror(tmp_path, {}))
    with pytest.raises(ConnectionError, match=r"Could not download http://127\.0\.0\.1.*404"):
        ds.kang_ifnb(download=True, base_url=base_url)
    assert list(data_dir.iterdir()) == []


def test_without_a_mirror_the_message_says_how_to_get_the_file(
    isolate_data: Isolate, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate_data()
    monkeypatch.delenv(ds.DATA_URL_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=ds.DATA_URL_ENV):
        ds.pancreas(download=True)


def test_download_url_prefers_the_given_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ds.DATA_URL_ENV, "http://env.example/data/")
    info = ds.DATASETS["pbmc3k"]
    assert ds.download_url(info) == "http://env.example/data/pbmc3k.h5ad"
    assert ds.download_url(info, "http://given.example") == "http://given.example/pbmc3k.h5ad"
    monkeypatch.delenv(ds.DATA_URL_ENV)
    assert ds.download_url(info) is None
