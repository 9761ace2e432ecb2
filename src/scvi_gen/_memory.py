"""Returning freed host memory to the operating system between generation chunks."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """Glibc's ``malloc_trim``, or None on other C libraries (macOS, musl, Windows)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> bool:
    """Hand memory that torch has freed back to the operating system (glibc only).

    Generating a chunk allocates many large temporaries of different sizes. glibc keeps freed
    blocks inside its heap for reuse, and with chunk after chunk the heap fragments, so the
    resident size of a long generation keeps growing although nothing stays alive (measured on
    MAFFlow at 2,000 genes: 0.9 GB after one chunk of 256 cells, 2.9 GB after 40). Trimming
    after each chunk keeps the resident size at one chunk's working set. Elsewhere this is a
    no-op.

    Returns
    -------
    Whether a trim was attempted.

    Examples
    --------
    >>> release_freed_memory()  # doctest: +SKIP
    True
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
