"""Bad ``generate`` / ``train`` arguments get the same clear error from every generator.

One tiny model per registered generator (as in ``tests/test_contract.py``); each check asserts
the error type and that the message names the argument and how to fix it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from scvi_gen.base._library_size import MAX_LIBRARY_SIZE
from tests.conftest import make_counts_adata
from tests.generators import NAMES, _kwargs, _one_epoch, _spec

#: Generators with classifier-free guidance over the categorical conditions.
_GUIDED = ("CFGen", "LatentDiffusion", "DiscreteDiffusion")


#: One intra-op thread: two contend on the 2-core machines and run much slower.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(trained_generators) -> dict[str, Any]:
    """Every generator trained one epoch on the same tiny data (built once per session)."""
    return {name: model for name, (_, model) in trained_generators.items()}


@pytest.mark.parametrize("name", NAMES)
def test_library_sizes_that_would_overflow_are_refused(name: str, trained: dict) -> None:
    _spec(name)
    model = trained[name]
    for value in (1e39, 1e12):
        with pytest.raises(ValueError, match=r"`library_size` must be at most .*realistic"):
            model.generate(2, library_size=value, seed=0, progress_bar=False)
    # The maximum itself still gives finite, non-negative counts.
    syn = model.generate(2, library_size=MAX_LIBRARY_SIZE, seed=0, progress_bar=False)
    values = syn.X.toarray()
    assert np.all(np.isfinite(values)) and np.all(values >= 0)


@pytest.mark.parametrize("name", NAMES)
def test_training_on_one_cell_says_how_many_are_needed(name: str) -> None:
    spec, cls = _spec(name)
    adata = make_counts_adata(n_cells=60, n_genes=20)[:1].copy()
    cls.setup_anndata(adata, labels_key="cell_type", **spec.setup_kwargs)
    model = cls(adata, **_kwargs(cls, spec))
    with pytest.raises(ValueError, match=rf"Cannot train {cls.__name__} on 1 cell.*at least \d+"):
        model.train(**{**spec.train_kwargs, **_one_epoch(cls)})


@pytest.mark.parametrize("name", NAMES)
def test_guidance_follows_one_rule(name: str, trained: dict) -> None:
    _spec(name)
    model = trained[name]
    guided = type(model).__name__ in _GUIDED
    cases: list[tuple[Any, type, str]] = [
        (-2.0, ValueError, "`guidance` must be"),
        ("high", TypeError, "`guidance` must be"),
        ({"tissue": 1.0}, ValueError, r"unknown attributes \['tissue'\]"),
    ]
    if not guided:
        cases = [(g, ValueError, "no classifier-free guidance.*guidance=None") for g, *_ in cases]
        cases.append((1.0, ValueError, "no classifier-free guidance.*guidance=None"))
    elif type(model).__name__ == "DiscreteDiffusion":  # one weight for all conditions
        cases[2] = ({"tissue": 1.0}, ValueError, "one classifier-free guidance weight")
    for guidance, error, match in cases:
        with pytest.raises(error, match=match):
            model.generate(2, guidance=guidance, seed=0, progress_bar=False)


@pytest.mark.parametrize("name", NAMES)
def test_bad_labels_seed_batch_size_and_n_cells(name: str, trained: dict) -> None:
    _spec(name)
    model = trained[name]
    bad: list[tuple[dict[str, Any], type, str]] = [
        ({"n_cells": 5, "labels": []}, ValueError, "`labels` is empty"),
        ({"n_cells": 5, "labels": 5}, TypeError, "`labels` must be one category"),
        ({"n_cells": 2, "seed": "abc"}, TypeError, "`seed` must be a non-negative integer"),
        ({"n_cells": 2, "seed": 1.7}, ValueError, "`seed` must be a non-negative integer"),
        ({"n_cells": 2, "seed": True}, TypeError, "`seed` must be"),
        ({"n_cells": 2, "batch_size": "abc"}, TypeError, "`batch_size` must be a positive"),
        ({"n_cells": 2, "batch_size": 1.5}, ValueError, "`batch_size` must be a positive"),
        ({"n_cells": 2.5}, ValueError, "`n_cells` must be a whole number"),
        ({"n_cells": -1}, ValueError, "`n_cells` must be a non-negative"),
        ({"n_cells": True}, TypeError, "`n_cells` must be a whole number"),
    ]
    for kwargs, error, match in bad:
        with pytest.raises(error, match=match):
            model.generate(**kwargs, progress_bar=False)
