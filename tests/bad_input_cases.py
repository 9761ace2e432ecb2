"""The bad-input matrix: one declared table of hostile or careless inputs and their outcomes.

Every case is a row with the outcome it must have: ``clear_error`` (an error of the declared
type whose message matches a regex naming the argument or input and what to do) or
``correct`` (the result is checked: finite counts of the right shape, the same genes, a
warning where one is due). :func:`observe` runs a case and says what actually happened, in
one of :data:`OUTCOMES`:

- ``clear_error`` / ``correct``: as declared above;
- ``unclear_error``: an exception that is not the declared clear one (wrong type, a message
  that names nothing, or any error where a correct result was due);
- ``silent_wrong``: no error where one was due, or a result that fails its check;
- ``crash``: the process died (only :mod:`benchmarks.bad_input_matrix` can see this; it runs
  each generator in a child process).

Per-model cases (:func:`model_cases`) run on every registered generator through a
:class:`ModelContext` (a tiny trained model, its saved files and tiny data);
:data:`ONCE_CASES` (metrics, MuData CFGen, CLI) run once. ``tests/test_bad_input_matrix*.py``
asserts every declared outcome; ``benchmarks/bad_input_matrix.py`` counts the observed ones.
"""

from __future__ import annotations

import itertools
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp

from scvi_gen.model._registry import GENERATORS
from tests.conftest import make_counts_adata

OUTCOMES = ("clear_error", "correct", "unclear_error", "silent_wrong", "crash")
#: Errors a user may get for bad input: a missing key or file keeps Python's own type.
USER_ERRORS = (ValueError, TypeError)
LOOKUP_ERRORS = (KeyError, ValueError)

#: Generators with classifier-free guidance over the categorical conditions.
GUIDED = ("CFGen", "LatentDiffusion", "DiscreteDiffusion")
#: The SDV baselines: one synthesizer per label, each fitted on at least 2 cells.
PER_LABEL_SYNTHESIZERS = ("GaussianCopulaGenerator", "CTGANGenerator", "TVAEGenerator")
#: Rows and genes of the tiny data the training-input cases fit on.
TINY_CELLS, TINY_GENES = 30, 12


@dataclass(frozen=True)
class Case:
    """One row of the matrix.

    Attributes
    ----------
    name
        Identifier (unique within its table).
    run
        ``run(ctx) -> result``: the hostile call. It may assert (an ``AssertionError`` counts
        as a silent wrong result, e.g. a pickle payload that ran).
    expect
        ``"clear_error"`` or ``"correct"``.
    error
        Exception types a clear error may have.
    match
        Regex the message of a clear error must match.
    check
        For ``correct``: ``check(result, ctx)`` asserts the result is right.
    warns
        For ``correct``: a warning category that must be emitted.
    """

    name: str
    run: Callable[[Any], Any]
    expect: str = "clear_error"
    error: tuple[type[BaseException], ...] = USER_ERRORS
    match: str = ""
    check: Callable[[Any, Any], None] | None = None
    warns: type[Warning] | None = None


def observe(case: Case, ctx: Any) -> tuple[str, str]:
    """Run ``case`` and classify what happened.

    Returns
    -------
    ``(outcome, detail)``: one of :data:`OUTCOMES` (never ``"crash"``: a dying process
    cannot report) and a one-line description for messages.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = case.run(ctx)
        except AssertionError as err:
            return "silent_wrong", f"check failed: {err}"
        except Exception as err:  # noqa: BLE001  (the point is to classify whatever escapes)
            message = " ".join(str(err).split())
            detail = f"{type(err).__name__}: {message}"
            if (
                case.expect == "clear_error"
                and isinstance(err, case.error)
                and re.search(case.match, message)
            ):
                return "clear_error", detail
            return "unclear_error", detail
    if case.expect == "clear_error":
        return "silent_wrong", f"no error (returned {type(result).__name__})"
    try:
        if case.check is not None:
            case.check(result, ctx)
    except AssertionError as err:
        return "silent_wrong", f"check failed: {err}"
    if case.warns is not None and not any(issubclass(w.category, case.warns) for w in caught):
        return "silent_wrong", f"no {case.warns.__name__} was emitted"
    return "correct", "ok"


# ---------------------------------------------------------------------------- contexts
@dataclass
class ModelContext:
    """What a per-model case works on.

    Attributes
    ----------
    name
        Registry name.
    cls
        Model class.
    model
        A tiny trained model (shared: cases must not change it).
    adata
        Its training data.
    saved
        Directory the model was saved to once (cases copy it before editing).
    workdir
        Scratch directory; :meth:`fresh` gives a new empty one inside it.
    """

    name: str
    cls: type
    model: Any
    adata: ad.AnnData
    saved: Path
    workdir: Path
    _counter: itertools.count = field(default_factory=itertools.count)

    @property
    def spec(self) -> Any:
        return GENERATORS[self.name]

    @property
    def counts_output(self) -> bool:
        return type(self.model)._output_kind == "counts" and self.model._output_kind == "counts"

    def fresh(self) -> Path:
        path = self.workdir / f"case{next(self._counter)}"
        path.mkdir(parents=True)
        return path

    def saved_copy(self) -> Path:
        import shutil

        target = self.fresh() / "model"
        shutil.copytree(self.saved, target)
        return target

    def fit(self, adata: ad.AnnData, **setup: Any) -> Any:
        """Set up, build and train one epoch on ``adata`` (labels ``cell_type``)."""
        from tests.generators import _kwargs, _one_epoch

        setup = {"labels_key": "cell_type", **self.spec.setup_kwargs, **setup}
        self.cls.setup_anndata(adata, **setup)
        model = self.cls(adata, **_kwargs(self.cls, self.spec))
        model.train(**{**self.spec.train_kwargs, **_one_epoch(self.cls)})
        return model


def build_model_context(name: str, model: Any, adata: ad.AnnData, workdir: Path) -> ModelContext:
    """A :class:`ModelContext` for a trained model (saved once into ``workdir``)."""
    saved = workdir / "saved" / "model"
    model.save(saved)
    return ModelContext(name, type(model), model, adata, saved, workdir)


def train_one(name: str, n_cells: int = 90, n_genes: int = 20) -> tuple[ad.AnnData, Any]:
    """One generator trained as in ``tests.generators.train_all`` (for the benchmark)."""
    import scvi

    from tests.generators import _kwargs, _one_epoch

    spec = GENERATORS[name]
    cls = spec.model_class()
    scvi.settings.seed = 0
    adata = make_counts_adata(n_cells=n_cells, n_genes=n_genes)
    cls.setup_anndata(adata, labels_key="cell_type", **spec.setup_kwargs)
    model = cls(adata, **_kwargs(cls, spec))
    model.train(**{**spec.train_kwargs, **_one_epoch(cls)})
    return adata, model


# ---------------------------------------------------------------------------- checks
def tiny(n_cells: int = TINY_CELLS, n_genes: int = TINY_GENES) -> ad.AnnData:
    """Tiny count data with 3 labels (``cell_type``) and two batches."""
    return make_counts_adata(n_cells=n_cells, n_genes=n_genes, seed=1)


def check_cells(
    syn: Any,
    ctx: ModelContext,
    n: int,
    var_names: Any = None,
    model: Any = None,
    integer: bool | None = None,
) -> None:
    """Assert ``syn`` is ``n`` generated cells: finite, non-negative, the training genes.

    ``integer``: whether values must be whole (default: when the model outputs counts).
    """
    model = ctx.model if model is None else model
    assert isinstance(syn, ad.AnnData), f"expected an AnnData, got {type(syn).__name__}"
    assert syn.n_obs == n, f"{syn.n_obs} cells, expected {n}"
    expected = model._generated_var_names() if var_names is None else var_names
    assert list(syn.var_names) == [str(v) for v in expected], "other genes than the model's"
    X = syn.X[:] if not sp.issparse(syn.X) and hasattr(syn.X, "shape") else syn.X
    values = X.data if sp.issparse(X) else np.asarray(X)
    assert np.all(np.isfinite(values)), "non-finite values"
    assert np.all(values >= 0), "negative values"
    if integer is None:
        integer = type(model)._output_kind == "counts" and model._output_kind == "counts"
    if integer:
        assert np.all(values == np.round(values)), "non-integer counts"


def fit_and_generate(ctx: ModelContext, adata: ad.AnnData, n: int = 6, **setup: Any) -> Any:
    """Train on ``adata`` and generate ``n`` cells: ``(model, cells)``."""
    model = ctx.fit(adata, **setup)
    return model, model.generate(n, seed=0, progress_bar=False)


def generated_ok(n: int = 6) -> Callable[[Any, ModelContext], None]:
    """A check for :func:`fit_and_generate`: ``n`` good cells over the model's genes."""

    def check(result: Any, ctx: ModelContext) -> None:
        model, syn = result
        check_cells(syn, ctx, n, model=model)

    return check


def generate(**kwargs: Any) -> Callable[[ModelContext], Any]:
    """A run calling ``ctx.model.generate(**kwargs)`` (seed 0 unless given)."""
    kwargs = {"seed": 0, "progress_bar": False, **kwargs}
    return lambda ctx: ctx.model.generate(**kwargs)


# ---------------------------------------------------------------------------- the table
def model_cases(cls: type) -> list[Case]:
    """Every per-model row for ``cls``: training data, ``generate``, files, new data."""
    from tests.bad_input_cases_files import file_cases, new_data_cases
    from tests.bad_input_cases_model import data_cases, generate_cases

    return [*data_cases(cls), *generate_cases(cls), *file_cases(cls), *new_data_cases(cls)]


def once_cases() -> list[Case]:
    """The rows that run once (metrics, MuData CFGen, CLI)."""
    from tests.bad_input_cases_once import once_cases as rows

    return rows()
