"""Package-wide settings: how much scvi-gen (and the libraries it drives) print.

Like scanpy's ``sc.settings.verbosity``: one number (or name) decides what a user sees.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from enum import IntEnum

logger = logging.getLogger(__name__)

_PACKAGE_LOGGER = "scvi_gen"
#: Loggers of the training stack whose INFO banners ("GPU available", "TPU available",
#: "LOCAL_RANK", litlogger/litmodels tips, "`Trainer.fit` stopped") are hidden by default.
_TRAINING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "scvi")


class Verbosity(IntEnum):
    """Verbosity levels, as in scanpy.

    ``error`` (0): errors only, no progress bars. ``warning`` (1, the default): warnings,
    progress bars and results. ``info`` (2): also scvi-gen's progress messages and Lightning's
    banners and tips. ``hint`` (3): also Lightning's hints and deprecation warnings raised
    while training. ``debug`` (4): everything, at DEBUG level.
    """

    error = 0
    warning = 1
    info = 2
    hint = 3
    debug = 4

    @property
    def logging_level(self) -> int:
        """The :mod:`logging` level of scvi-gen's own loggers at this verbosity."""
        return {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.INFO}.get(
            int(self), logging.DEBUG
        )


class _StderrHandler(logging.Handler):
    """Writes to the *current* ``sys.stderr`` unless the application configured logging.

    Resolving ``sys.stderr`` at emit time keeps it right under pytest's capture and in
    notebooks; staying silent when the root logger has handlers avoids printing a record
    twice for users who set up logging themselves (their handlers get it by propagation).
    """

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:
            return
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must never raise into user code
            self.handleError(record)


def _parse_verbosity(value: int | str | Verbosity) -> Verbosity:
    if isinstance(value, str):
        try:
            return Verbosity[value.strip().lower()]
        except KeyError:
            names = ", ".join(repr(v.name) for v in Verbosity)
            raise ValueError(
                f"Unknown verbosity {value!r}; use one of {names} or a number 0-4."
            ) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"verbosity must be an int 0-4 or a level name, got {type(value).__name__}."
        )
    # Like scanpy: anything above debug is debug, below error is error.
    return Verbosity(min(max(int(value), 0), 4))


class ScviGenSettings:
    """Settings of scvi-gen, available as ``scvi_gen.settings``.

    Attributes
    ----------
    verbosity
        How much is printed; a number 0-4 or a name (``"error"``, ``"warning"``, ``"info"``,
        ``"hint"``, ``"debug"``), see :class:`Verbosity`. Default ``"warning"`` (1): progress
        bars (on stderr, one per training stage) and results, without Lightning's banners,
        tips and deprecation chatter.

    Examples
    --------
    >>> import scvi_gen
    >>> scvi_gen.settings.verbosity
    <Verbosity.warning: 1>
    >>> scvi_gen.settings.verbosity = "info"  # show Lightning's banners while training
    >>> scvi_gen.settings.verbosity = 1
    >>> with scvi_gen.settings.override(verbosity=0):
    ...     pass  # silent here, no progress bars
    """

    def __init__(self, verbosity: int | str | Verbosity = Verbosity.warning) -> None:
        self._verbosity = Verbosity.warning
        self.verbosity = verbosity

    @property
    def verbosity(self) -> Verbosity:
        """The current verbosity level."""
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int | str | Verbosity) -> None:
        self._verbosity = _parse_verbosity(value)
        logging.getLogger(_PACKAGE_LOGGER).setLevel(self._verbosity.logging_level)

    @property
    def progress_bars(self) -> bool:
        """Whether progress bars are shown by default (every level but ``error``)."""
        return self._verbosity >= Verbosity.warning

    @contextmanager
    def override(self, *, verbosity: int | str | Verbosity) -> Iterator[None]:
        """Use another verbosity inside a ``with`` block, then restore the previous one.

        Parameters
        ----------
        verbosity
            The temporary level.

        Examples
        --------
        >>> import scvi_gen
        >>> with scvi_gen.settings.override(verbosity="info"):
        ...     pass
        """
        before = self._verbosity
        self.verbosity = verbosity
        try:
            yield
        finally:
            self.verbosity = before

    def __repr__(self) -> str:
        return f"ScviGenSettings(verbosity={self._verbosity.name!r})"


def _install_handler() -> None:
    package = logging.getLogger(_PACKAGE_LOGGER)
    if not any(isinstance(h, _StderrHandler) for h in package.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        package.addHandler(handler)


_install_handler()
settings = ScviGenSettings()


@contextmanager
def training_output() -> Iterator[None]:
    """Quiet Lightning and scvi-tools while one of our trainers is built and run.

    Below ``info`` their INFO loggers are raised to WARNING (restored afterwards); below
    ``hint`` Lightning's possible-user hints and the deprecation/future warnings raised from
    ``lightning``, ``torch`` and ``scvi`` are ignored. Our own warnings (e.g. an undertrained
    model) and every error still show.

    Examples
    --------
    >>> from scvi_gen._settings import training_output
    >>> with training_output():
    ...     pass  # runner() here prints no "GPU available" banner
    """
    level = settings.verbosity
    with warnings.catch_warnings():
        if level < Verbosity.hint:
            _ignore_training_chatter()
        if level >= Verbosity.info:
            yield
            return
        loggers = [logging.getLogger(name) for name in _TRAINING_LOGGERS]
        before = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for lg, old in zip(loggers, before, strict=True):
                lg.setLevel(old)


def _ignore_training_chatter() -> None:
    """Filters (inside a ``catch_warnings`` block) for warnings users cannot act on."""
    try:
        from lightning.fabric.utilities.warnings import PossibleUserWarning
        from lightning.pytorch.utilities.rank_zero import LightningDeprecationWarning
    except ImportError:  # pragma: no cover - lightning is a dependency of scvi-tools
        pass
    else:
        warnings.filterwarnings("ignore", category=PossibleUserWarning)
        warnings.filterwarnings("ignore", category=LightningDeprecationWarning)
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings(
            "ignore", category=category, module=r"(lightning|torch|scvi|pytorch_lightning)\b"
        )


@contextmanager
def quiet_mudata() -> Iterator[None]:
    """Build or slice MuData without mudata 0.3's ``pull_on_update`` FutureWarning.

    Sets ``pull_on_update=False`` (the announced mudata 0.4 default, so the result is the same
    on both versions) for the block only: the user's global mudata options are restored
    afterwards. mudata without that option (>= 0.4) does not warn, so nothing is set there.

    Examples
    --------
    >>> import mudata as md
    >>> from scvi_gen._settings import quiet_mudata
    >>> with quiet_mudata():
    ...     pass  # md.MuData({...}) or mdata[cells].copy() here
    """
    import mudata as md

    try:
        options = md.set_options(pull_on_update=False)
    except ValueError:
        options = nullcontext()
    with warnings.catch_warnings(), options:
        warnings.filterwarnings(
            "ignore", message=r"From 0\.4 \.update\(\)", category=FutureWarning
        )
        yield
