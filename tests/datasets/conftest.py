"""Fixtures for the dataset tests.

``require_data`` belongs in ``tests/conftest.py`` once the lead moves it there, so every test
package can ask for a real data file the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from scvi_gen.datasets import _paths, dataset_path


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_data_path(name: str) -> Path:
    """Path of a registered data file; skip when missing locally, fail when ``CI=true``.

    A corrupt file (checksum mismatch) is never skipped: the ValueError propagates.
    """
    try:
        return dataset_path(name)
    except FileNotFoundError as err:
        if _in_ci():
            pytest.fail(f"CI=true and dataset {name!r} is missing:\n{err}")
        pytest.skip(f"dataset {name!r} not available locally")


@pytest.fixture
def require_data() -> Callable[[str], Path]:
    """``require_data("pbmc3k")`` -> path, skipping (locally) or failing (CI) when missing."""
    return require_data_path


@pytest.fixture
def isolate_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], Path]:
    """Call it to get an empty ``$SCVI_GEN_DATA_DIR`` and no ``shared/data`` fallback.

    A callable rather than a plain fixture so a test can locate the real files first.
    """

    def isolate() -> Path:
        data_dir = tmp_path / "scvi_gen_data"
        data_dir.mkdir(exist_ok=True)
        monkeypatch.setenv(_paths.DATA_DIR_ENV, str(data_dir))
        monkeypatch.delenv(_paths.DATA_URL_ENV, raising=False)
        monkeypatch.setattr(_paths, "_dev_data_dirs", list)
        return data_dir

    return isolate


@pytest.fixture
def http_server():
    """Serve a directory on 127.0.0.1 (no internet): ``http_server(directory) -> base URL``."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    servers = []

    class _Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep the test output clean
            pass

    def serve(directory: Path) -> str:
        handler = functools.partial(_Quiet, directory=str(directory))
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/files"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()
