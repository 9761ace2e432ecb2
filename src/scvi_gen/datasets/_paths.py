"""Where data files live: data directory, file resolution, checksum and download.

Every loader goes through :func:`dataset_path`, so the search order, the checksum check and the
error messages are the same for all data sets.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ._registry import DatasetInfo, get_dataset_info

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "SCVI_GEN_DATA_DIR"
#: Base URL of a mirror holding the registered files under their file names (e.g. a lab's web
#: server or object store with a copy of ``shared/data``); ``download=True`` fetches from it.
DATA_URL_ENV = "SCVI_GEN_DATA_URL"

_CHUNK_BYTES = 1 << 20
_DOWNLOAD_TIMEOUT_S = 60

# (resolved path, mtime_ns, size) -> sha256 that file was verified against. Hashing a few MB
# on every load is cheap but not free; any rewrite of the file changes mtime or size and so
# forces a fresh hash.
_VERIFIED: dict[tuple[str, int, int], str] = {}


def get_data_dir() -> Path:
    r"""The directory where data files are looked for first and downloaded to.

    Returns
    -------
    ``$SCVI_GEN_DATA_DIR`` when that environment variable is set, else the user cache
    directory (``$XDG_CACHE_HOME/scvi_gen`` or ``~/.cache/scvi_gen`` on Linux,
    ``~/Library/Caches/scvi_gen`` on macOS, ``%LOCALAPPDATA%\scvi_gen\Cache`` on Windows).
    The directory is not created here.

    Examples
    --------
    >>> from scvi_gen.datasets import get_data_dir
    >>> get_data_dir().name  # doctest: +SKIP
    'scvi_gen'
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return _user_cache_dir()


def _user_cache_dir() -> Path:
    # The platformdirs conventions, written out to avoid a dependency for three lines.
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        base = Path(local) if local else Path.home() / "AppData" / "Local"
        return base / "scvi_gen" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "scvi_gen"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "scvi_gen"


def _dev_data_dirs() -> list[Path]:
    """``shared/data`` next to a source checkout (``<repo>/../shared/data``), if any.

    This is how tests and benchmarks find the files in a development checkout without any
    configuration. It is searched last, and the checksum still guards what is read from it.
    """
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "data"
        if candidate.is_dir():
            return [candidate]
    return []


def _search_dirs(data_dir: str | os.PathLike[str] | None) -> list[Path]:
    dirs = [Path(data_dir).expanduser()] if data_dir is not None else []
    dirs += [get_data_dir(), *_dev_data_dirs()]
    # Absolute paths, in order, without repeats (data_dir is often the env var's directory).
    return list(dict.fromkeys(d.absolute() for d in dirs))


def sha256sum(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, read in 1 MiB chunks so large files never sit in memory.

    Parameters
    ----------
    path
        File to hash.

    Returns
    -------
    Lower-case hex digest.

    Examples
    --------
    >>> from scvi_gen.datasets import sha256sum
    >>> sha256sum("pbmc3k.h5ad")  # doctest: +SKIP
    '18aa889a...'
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def verify_file(path: str | os.PathLike[str], info: DatasetInfo) -> None:
    """Check a file against its registry checksum.

    Parameters
    ----------
    path
        The file on disk.
    info
        Registry entry with the expected SHA-256.

    Raises
    ------
    ValueError
        When the checksum differs; the message names the file, both hashes and the fix.

    Examples
    --------
    >>> from scvi_gen.datasets import DATASETS, verify_file
    >>> verify_file("pbmc3k.h5ad", DATASETS["pbmc3k"])  # doctest: +SKIP
    """
    path = Path(path)
    key = _cache_key(path)
    if _VERIFIED.get(key) == info.sha256:
        return
    actual = sha256sum(path)
    if actual != info.sha256:
        fix = f"Delete it and put the original {info.filename} there"
        url = download_url(info)
        if url is not None:
            fix += f", or delete it and load with download=True to fetch it from {url}"
        raise ValueError(
            f"Checksum mismatch for dataset {info.name!r} at {path}: expected sha256 "
            f"{info.sha256}, got {actual}. The file is corrupt, truncated or a different "
            f"version. {fix}."
        )
    _VERIFIED[key] = info.sha256


def download_url(info: DatasetInfo, base_url: str | None = None) -> str | None:
    """Where ``download=True`` fetches a registered file from, or ``None``.

    Parameters
    ----------
    info
        Registry entry.
    base_url
        Mirror base URL; ``None`` uses ``$SCVI_GEN_DATA_URL``.

    Returns
    -------
    ``<base_url>/<filename>`` when a mirror is given or configured, else the entry's public
    ``url`` (``None`` for every registered file: they are processed subsets).

    Examples
    --------
    >>> from scvi_gen.datasets import DATASETS, download_url
    >>> download_url(DATASETS["pbmc3k"], "https://example.org/data")
    'https://example.org/data/pbmc3k.h5ad'
    """
    base = base_url if base_url is not None else os.environ.get(DATA_URL_ENV)
    if base:
        return f"{base.rstrip('/')}/{info.filename}"
    return info.url


def dataset_path(
    name: str | DatasetInfo,
    path: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    base_url: str | None = None,
) -> Path:
    """Find (or download) a registered data file and verify its checksum.

    Search order: ``path`` if given (and nothing else), else ``data_dir``, then
    :func:`get_data_dir` (``$SCVI_GEN_DATA_DIR`` or the user cache), then a development
    ``shared/data`` folder next to the source checkout. The first hit is used.

    Parameters
    ----------
    name
        Registry key (see :data:`DATASETS`) or a :class:`DatasetInfo`.
    path
        Explicit local file; it must still match the registry checksum.
    data_dir
        Extra directory searched first; also where ``download=True`` saves the file.
    download
        Fetch the file when it is found nowhere: from ``base_url`` (or
        ``$SCVI_GEN_DATA_URL``), a mirror holding the files under their names, else from the
        entry's public ``url``. The download is checked against the registry checksum before
        it is kept.
    base_url
        Mirror base URL for ``download``.

    Returns
    -------
    Path of a file whose SHA-256 matches the registry.

    Raises
    ------
    FileNotFoundError
        Not found; the message lists the searched paths and where to put the file.
    ValueError
        Checksum mismatch.

    Examples
    --------
    >>> from scvi_gen.datasets import dataset_path
    >>> dataset_path("pbmc3k").name  # doctest: +SKIP
    'pbmc3k.h5ad'
    """
    info = name if isinstance(name, DatasetInfo) else get_dataset_info(name)
    if path is not None:
        found = Path(path).expanduser()
        if not found.is_file():
            raise FileNotFoundError(f"Dataset {info.name!r}: no file at path={str(found)!r}.")
    else:
        dirs = _search_dirs(data_dir)
        found = next((d / info.filename for d in dirs if (d / info.filename).is_file()), None)
        if found is None:
            url = download_url(info, base_url)
            if download and url is not None:
                return _download(info, url, dirs[0])
            raise FileNotFoundError(_missing_message(info, dirs, download, url))
    logger.debug("Dataset %r resolved to %s", info.name, found)
    verify_file(found, info)
    return found


def _missing_message(info: DatasetInfo, dirs: list[Path], download: bool, url: str | None) -> str:
    searched = "\n".join(f"  - {d / info.filename}" for d in dirs)
    lines = [
        f"Dataset {info.name!r} ({info.filename}) not found. Searched:\n{searched}",
        f"Put {info.filename} into the data directory {dirs[0]} (choose it with the "
        f"{DATA_DIR_ENV} environment variable or data_dir=), or pass path= to the file.",
    ]
    if url is not None:
        lines.append(f"Or load with download=True to fetch it from {url}.")
    else:
        no_dl = "download=True cannot help yet: " if download else ""
        lines.append(
            f"{no_dl}there is no public download of exactly this file (it is a processed "
            f"subset). Point {DATA_URL_ENV} (or base_url=) at a mirror that holds it under "
            f"its name and load with download=True, or rebuild it from the upstream source: "
            f"{info.upstream or 'unknown'}"
        )
    return "\n".join(lines)


def _download(info: DatasetInfo, url: str, dest_dir: Path) -> Path:
    """Fetch a registered file, verify it, then keep it (a failed download never looks valid)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / info.filename
    logger.info("Downloading %r from %s to %s", info.name, url, dest)

    def verify(partial: Path) -> None:
        try:
            verify_file(partial, info)
        except ValueError as err:
            raise ValueError(f"Refused the download from {url}: {err} Nothing was kept.") from err

    _download_to(url, dest, verify)
    # The rename keeps bytes, size and mtime: record it so the first load does not rehash.
    _VERIFIED[_cache_key(dest)] = info.sha256
    return dest


def _download_to(url: str, dest: Path, verify: Callable[[Path], None] | None = None) -> Path:
    """Fetch ``url`` to ``<dest>.part``, check it with ``verify``, then rename it to ``dest``."""
    partial = dest.with_name(dest.name + ".part")
    try:
        _fetch_url(url, partial)
        if verify is not None:
            verify(partial)
        partial.replace(dest)
    finally:
        partial.unlink(missing_ok=True)
    return dest


def _fetch_url(url: str, dest: Path) -> None:
    # Plain urllib: no extra dependency, and tests replace this one function.
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            with dest.open("wb") as fh:
                shutil.copyfileobj(response, fh, _CHUNK_BYTES)
    except (urllib.error.URLError, TimeoutError) as err:
        raise ConnectionError(
            f"Could not download {url}: {err}. Check the address (base_url= or "
            f"{DATA_URL_ENV}) and the connection, or put the file in the data directory."
        ) from err
