from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scvi_gen.base import ConditionField, build_condition_plan, counts_per_label

FIELD = ConditionField("cell_type", "labels", 0, ("A", "B", "C"))
BATCH = ConditionField("batch", "batch", 0, ("b0", "b1"))
WEIGHTS = np.array([0.5, 0.25, 0.25])


def _labels(n_cells, labels):
    return counts_per_label(n_cells, labels, FIELD, WEIGHTS, np.random.default_rng(0))


def test_dict_gives_exact_counts():
    plan = _labels(None, {"A": 3, "C": 2})
    assert plan == ["A", "A", "A", "C", "C"]


def test_single_category_needs_n_cells():
    assert _labels(4, "B") == ["B"] * 4
    with pytest.raises(ValueError, match="n_cells"):
        _labels(None, "B")


def test_list_spreads_n_cells_evenly():
    assert _labels(5, ["A", "B"]) == ["A", "A", "A", "B", "B"]
    assert _labels(None, ["C", "A"]) == ["C", "A"]


def test_unknown_label_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown 'cell_type' categories \\['Z'\\]"):
        _labels(None, {"Z": 2})


def test_labels_without_labels_key_is_an_error():
    with pytest.raises(ValueError, match="labels_key"):
        counts_per_label(2, "A", None, None, np.random.default_rng(0))


def test_unspecified_covariates_follow_the_label():
    training = pd.DataFrame(
        {"cell_type": ["A"] * 10 + ["B"] * 10, "batch": ["b0"] * 10 + ["b1"] * 10}
    )
    plan = build_condition_plan(
        [FIELD, BATCH], training, ["A", "B"] * 20, None, np.random.default_rng(0)
    )
    assert (plan.loc[plan.cell_type == "A", "batch"] == "b0").all()
    assert (plan.loc[plan.cell_type == "B", "batch"] == "b1").all()


def test_fixed_covariate_allows_unseen_combinations():
    training = pd.DataFrame({"cell_type": ["A"] * 10, "batch": ["b0"] * 10})
    plan = build_condition_plan(
        [FIELD, BATCH], training, ["A"] * 4, {"batch": "b1"}, np.random.default_rng(0)
    )
    assert (plan["batch"] == "b1").all()


def test_unknown_covariate_is_a_clear_error():
    training = pd.DataFrame({"cell_type": ["A"], "batch": ["b0"]})
    with pytest.raises(ValueError, match="Unknown covariates"):
        build_condition_plan(
            [FIELD, BATCH], training, ["A"], {"donor": "x"}, np.random.default_rng(0)
        )


def test_unspecified_continuous_covariate_is_copied_from_training_cells():
    import scipy.sparse as sp

    from scvi_gen.base._data_state import batch_conditions

    age = ConditionField("age", "extra_continuous_covs", 0, None)
    batch = {
        "X": sp.csr_matrix((6, 2)),
        "labels": np.array([[0], [0], [0], [1], [1], [1]]),
        "extra_continuous_covs": np.array([[1.0], [2.0], [3.0], [7.0], [8.0], [9.0]]),
    }
    training = batch_conditions(batch, [FIELD, age])
    plan = build_condition_plan(
        [FIELD, age], training, ["A", "B"] * 10, None, np.random.default_rng(0)
    )
    assert plan["age"].notna().all()
    assert plan.loc[plan.cell_type == "A", "age"].isin([1.0, 2.0, 3.0]).all()
    assert plan.loc[plan.cell_type == "B", "age"].isin([7.0, 8.0, 9.0]).all()


@pytest.mark.parametrize(
    ("n_cells", "labels", "match"),
    [
        (None, {"A": 2.7}, r"labels\['A'\] must be a whole number"),
        (2.5, "A", "`n_cells` must be a whole number"),
        (None, {"A": -1}, "non-negative"),
        (None, {"A": "3"}, "whole number of cells, got '3'"),
    ],
)
def test_cell_counts_must_be_whole_non_negative_numbers(n_cells, labels, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _labels(n_cells, labels)


def test_whole_float_cell_counts_are_accepted():
    assert _labels(None, {"A": 2.0}) == ["A", "A"]


@pytest.mark.parametrize(("value", "match"), [(np.nan, "NaN or infinite"), ("old", "numbers")])
def test_continuous_covariates_must_be_finite_numbers(value, match):
    age = ConditionField("age", "extra_continuous_covs", 0, None)
    training = pd.DataFrame({"cell_type": ["A"], "age": [1.0]})
    with pytest.raises(ValueError, match=match):
        build_condition_plan(
            [FIELD, age], training, ["A"] * 2, {"age": value}, np.random.default_rng(0)
        )


def test_new_data_categories_match_across_int_float_and_string_spellings():
    from scvi_gen.base._generative_mixin import check_known_categories

    donor = ConditionField("donor", "batch", 0, ("0", "1"))
    check_known_categories(pd.DataFrame({"donor": [0.0, 1.0, np.nan]}), [donor])
    check_known_categories(pd.DataFrame({"donor": ["0", "1"]}), [donor])
    with pytest.raises(ValueError, match=r"Unknown 'donor' categories \['2.0'\]"):
        check_known_categories(pd.DataFrame({"donor": [0.0, 2.0]}), [donor])


def test_empty_labels_are_refused_naming_the_forms() -> None:
    with pytest.raises(ValueError, match=r"`labels` is empty; pass one category.*\{category"):
        _labels(5, [])


@pytest.mark.parametrize("labels", [5, 2.5, b"A"])
def test_labels_of_the_wrong_type_are_refused(labels: object) -> None:
    with pytest.raises(TypeError, match=r"`labels` must be one category \(a str\), a non-empty"):
        _labels(5, labels)


@pytest.mark.parametrize(
    ("n_cells", "error"),
    [(2.5, ValueError), (-1, ValueError), (True, TypeError), ("5", TypeError)],
)
def test_bad_n_cells_is_refused(n_cells: object, error: type) -> None:
    with pytest.raises(error, match="`n_cells` must be"):
        _labels(n_cells, "A")
