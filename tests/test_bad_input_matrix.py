"""The bad-input matrix as a test: every row of the case table has its declared outcome.

The table lives in ``tests/bad_input_cases*.py`` (shared with
``benchmarks/bad_input_matrix.py``, which counts the observed outcomes). Per-model rows run
on every registered generator, reusing the session's tiny trained models; metrics, MuData
CFGen and CLI rows run once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scvi_gen.model._registry import GENERATORS
from tests.bad_input_cases import (
    Case,
    ModelContext,
    build_model_context,
    model_cases,
    observe,
    once_cases,
)
from tests.bad_input_cases_once import OnceContext
from tests.generators import NAMES

#: One intra-op thread: two contend on the 2-core machines and run much slower.
pytestmark = pytest.mark.usefixtures("one_thread")

#: Rows that fail for a reason outside this table's files, with the fix they need.
KNOWN_FAILURES: dict[str, str] = {}


def _param(prefix: str, case: Case, *before: Any) -> Any:
    marks = []
    if case.name in KNOWN_FAILURES:
        marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[case.name]))
    return pytest.param(*before, case, id=f"{prefix}-{case.name}", marks=marks)


def _model_params() -> list[Any]:
    params = []
    for name in NAMES:
        try:
            cls = GENERATORS[name].model_class()
        except ImportError:  # an optional extra (SDV) that is not installed
            continue
        params += [_param(name, case, name) for case in model_cases(cls)]
    return params


@pytest.fixture(scope="module")
def context(trained_generators, tmp_path_factory) -> Callable[[str], ModelContext]:
    """The context of one generator, built (saved once) on first use."""
    built: dict[str, ModelContext] = {}

    def get(name: str) -> ModelContext:
        if name not in built:
            adata, model = trained_generators[name]
            built[name] = build_model_context(name, model, adata, tmp_path_factory.mktemp(name))
        return built[name]

    return get


@pytest.fixture(scope="module")
def once_context(trained_generators, tmp_path_factory) -> OnceContext:
    """Scratch space and the tiny SCVIGenerator saved once (for the CLI rows)."""
    root = tmp_path_factory.mktemp("once")
    trained_generators["scvi"][1].save(root / "saved")
    return OnceContext(root / "work", root / "saved")


@pytest.mark.parametrize(("name", "case"), _model_params())
def test_per_model_case(name: str, case: Case, context) -> None:
    outcome, detail = observe(case, context(name))
    assert outcome == case.expect, f"{name} {case.name}: {outcome} ({detail})"


@pytest.mark.parametrize("case", [_param("once", c) for c in once_cases()])
def test_once_case(case: Case, once_context: OnceContext) -> None:
    outcome, detail = observe(case, once_context)
    assert outcome == case.expect, f"{case.name}: {outcome} ({detail})"


def test_the_table_covers_every_generator_with_over_210_cases() -> None:
    per_model = {}
    for name in NAMES:
        try:
            per_model[name] = model_cases(GENERATORS[name].model_class())
        except ImportError:
            continue
    total = sum(map(len, per_model.values())) + len(once_cases())
    assert total >= 210
    for name, cases in per_model.items():
        names = [c.name for c in cases]
        assert len(names) == len(set(names)), f"{name}: repeated case names"
        assert {"one_cell", "weights_pickle_payload", "library_size_1e39"} <= set(names)


# ------------------------------------------------------------------ the classifier itself
def _raise(err: BaseException) -> Callable[[Any], Any]:
    def run(ctx: Any) -> Any:
        raise err

    return run


def _fail(result: Any, ctx: Any) -> None:
    raise AssertionError("wrong")


@pytest.mark.parametrize(
    ("case", "outcome"),
    [
        (Case("a", _raise(ValueError("`x` must be positive")), match=r"`x` must"), "clear_error"),
        (Case("b", _raise(ValueError("index 3 is out of bounds")), match=r"`x`"), "unclear_error"),
        (Case("c", _raise(RuntimeError("`x` must be positive")), match=r"`x`"), "unclear_error"),
        (Case("d", lambda ctx: 1, match=r"`x`"), "silent_wrong"),
        (Case("e", lambda ctx: 1, "correct", check=_fail), "silent_wrong"),
        (Case("f", lambda ctx: 1, "correct", warns=UserWarning), "silent_wrong"),
        (Case("g", _raise(ValueError("`x` must be positive")), "correct"), "unclear_error"),
        (Case("h", lambda ctx: 1, "correct", check=lambda r, c: None), "correct"),
    ],
)
def test_observe_classifies_known_outcomes(case: Case, outcome: str, tmp_path: Path) -> None:
    assert observe(case, None)[0] == outcome
