"""Property-based tests (hypothesis) of the metrics, the tokenizer and the condition plans."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from scvi_gen.base._conditions import ConditionField, counts_per_label
from scvi_gen.metrics import energy_distance, mmd_rbf, wasserstein
from scvi_gen.model.discrete_diffusion._tokenizer import ExpressionTokenizer

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=32)
clouds = st.integers(3, 12).flatmap(
    lambda n: st.tuples(
        arrays(np.float64, (n, 3), elements=finite),
        arrays(np.float64, (n + 2, 3), elements=finite),
    )
)


@FAST
@given(clouds)
def test_distances_are_symmetric(pair):
    x, y = pair
    for distance in (energy_distance, wasserstein):
        assert np.isclose(distance(x, y), distance(y, x), rtol=1e-6, atol=1e-9)
    bandwidths = [1.0, 2.0]
    assert np.isclose(
        mmd_rbf(x, y, bandwidths=bandwidths), mmd_rbf(y, x, bandwidths=bandwidths), atol=1e-9
    )


@FAST
@given(clouds)
def test_distances_of_a_set_to_itself_are_zero(pair):
    x, _ = pair
    assert np.isclose(energy_distance(x, x), 0.0, atol=1e-9)
    assert np.isclose(wasserstein(x, x), 0.0, atol=1e-9)
    assert np.isclose(mmd_rbf(x, x, bandwidths=[1.0], biased=True), 0.0, atol=1e-9)


@FAST
@given(clouds, st.randoms(use_true_random=False))
def test_distances_do_not_depend_on_row_order(pair, random):
    x, y = pair
    order = list(range(len(x)))
    random.shuffle(order)
    for distance in (energy_distance, wasserstein):
        assert np.isclose(distance(x[order], y), distance(x, y), rtol=1e-6, atol=1e-9)


@FAST
@given(
    arrays(np.float64, st.integers(20, 200), elements=st.floats(0.01, 50.0)),
    st.integers(3, 12),
)
def test_bin_centres_tokenize_back_to_their_bin(values, num_bins):
    tokenizer = ExpressionTokenizer(num_bins=num_bins).fit(values)
    centres = tokenizer.centres()
    tokens = tokenizer.tokenize(centres.unsqueeze(0)).squeeze(0)
    assert tokens[0] == 0  # the zero bin's centre is an exact zero
    # every non-zero bin's centre lies in that bin (bins collapsed on tied values excepted)
    distinct = torch.unique(centres[1:]).numel() == num_bins - 1
    if distinct:
        assert torch.equal(tokens, torch.arange(num_bins))


_FIELD = ConditionField("cell_type", "labels", 0, ("A", "B", "C"))


@FAST
@given(st.dictionaries(st.sampled_from(["A", "B", "C"]), st.integers(0, 20), min_size=1))
def test_a_label_dict_gives_exactly_those_counts(wanted):
    labels = counts_per_label(None, wanted, _FIELD, None, np.random.default_rng(0))
    counts = pd.Series(labels).value_counts()
    for label, n in wanted.items():
        assert counts.get(label, 0) == n
    assert len(labels) == sum(wanted.values())


@FAST
@given(st.integers(1, 200), st.integers(0, 5))
def test_labels_drawn_by_frequency_have_the_requested_count(n_cells, seed):
    weights = np.array([0.5, 0.3, 0.2])
    labels = counts_per_label(n_cells, None, _FIELD, weights, np.random.default_rng(seed))
    assert len(labels) == n_cells
    assert set(labels) <= {"A", "B", "C"}


@FAST
@given(st.lists(st.integers(1, 60), min_size=1, max_size=8), st.floats(0.05, 1.0))
def test_q3_plan_tops_every_class_up_to_the_same_target(sizes, q):
    from scvi_gen.datasets import q3_generation_plan

    labels = [f"c{i}" for i, n in enumerate(sizes) for _ in range(n)]
    plan = q3_generation_plan(labels, q=q, include_zero=True)
    target = int(np.ceil(np.percentile(sizes, 100 * q) - 1e-9))
    for i, n in enumerate(sizes):
        assert plan[f"c{i}"] == max(0, target - n)
        assert n + plan[f"c{i}"] >= target
