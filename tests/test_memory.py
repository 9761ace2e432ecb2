from __future__ import annotations

import sys

from scvi_gen._memory import release_freed_memory


def test_release_freed_memory_trims_on_glibc_and_is_a_noop_elsewhere():
    attempted = release_freed_memory()
    assert isinstance(attempted, bool)
    if sys.platform.startswith("linux"):
        assert attempted
