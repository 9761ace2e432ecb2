"""Score generated cells over a range of classifier-free guidance weights."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from anndata import AnnData

from scvi_gen.base._guidance import GuidanceArg

logger = logging.getLogger(__name__)


def guidance_sweep(
    model: Any,
    train: AnnData,
    test: AnnData,
    weights: Sequence[GuidanceArg],
    labels_key: str,
    *,
    seed: int = 0,
    batch_size: int | None = None,
    **evaluate_kwargs: Any,
) -> pd.DataFrame:
    """Generate test-matched cells for every guidance weight and score them.

    For each weight, the model generates as many cells per label as ``test`` holds and
    :func:`scvi_gen.metrics.evaluate` scores them against ``test`` (with ``train`` defining
    the common space).

    Parameters
    ----------
    model
        A trained generator with classifier-free guidance (e.g. :class:`~scvi_gen.CFGen`).
    train
        Real training cells (counts).
    test
        Real held-out cells (counts), with ``obs[labels_key]``.
    weights
        Guidance settings to try: numbers (all attributes) or ``{attribute: weight}`` dicts.
    labels_key
        ``obs`` column with the labels to generate.
    seed
        Seed of generation and evaluation.
    batch_size
        Cells per generation chunk.
    **evaluate_kwargs
        Passed to :func:`scvi_gen.metrics.evaluate` (``metrics``, ``n_pcs`` ...).

    Returns
    -------
    The tidy output of ``evaluate`` for every weight, with a ``guidance`` column (the weight,
    or a JSON string for a dict).

    Examples
    --------
    >>> from scvi_gen.benchmark import guidance_sweep
    >>> table = guidance_sweep(model, train, test, [0.0, 1.0, 2.0], labels_key="cell_type")
    >>> table.query("metric == 'mmd_rbf' and scope == 'global'")
    """
    from scvi_gen.datasets import matched_generation_plan
    from scvi_gen.metrics import evaluate

    if not len(weights):
        raise ValueError("Pass at least one guidance weight.")
    plan = matched_generation_plan(test.obs[labels_key])
    frames = []
    for weight in weights:
        logger.info("Guidance sweep: weight %s", weight)
        synthetic = model.generate(
            labels=plan, guidance=weight, seed=seed, batch_size=batch_size, progress_bar=False
        )
        table = evaluate(
            train, test, synthetic, labels_key=labels_key, seed=seed, **evaluate_kwargs
        )
        table.insert(0, "guidance", _label(weight))
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def _label(weight: GuidanceArg) -> float | str | None:
    if isinstance(weight, Mapping):
        return json.dumps({str(k): float(v) for k, v in weight.items()}, sort_keys=True)
    return None if weight is None else float(weight)
