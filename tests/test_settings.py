from __future__ import annotations

import logging
import warnings

import pytest

import scvi_gen
from scvi_gen._settings import Verbosity, quiet_mudata, training_output
from tests.conftest import make_counts_adata

BANNERS = ("GPU available", "TPU available", "LOCAL_RANK", "Tip:", "litlogger", "Trainer.fit")


@pytest.fixture(autouse=True)
def _restore_verbosity():
    before = scvi_gen.settings.verbosity
    yield
    scvi_gen.settings.verbosity = before


def _train_scvi(**train_kwargs) -> None:
    from scvi_gen import SCVIGenerator

    adata = make_counts_adata(n_cells=60, n_genes=12)
    SCVIGenerator.setup_anndata(adata, labels_key="cell_type")
    model = SCVIGenerator(adata, n_hidden=8, n_latent=2)
    model.train(max_epochs=2, **train_kwargs)


def test_default_training_prints_no_banner_and_bar_goes_to_stderr(
    capfd, caplog, lightning_messages, one_thread
):
    assert scvi_gen.settings.verbosity == Verbosity.warning
    caplog.set_level(logging.DEBUG)
    _train_scvi()
    out, err = capfd.readouterr()
    assert out == ""
    for banner in BANNERS:
        assert banner not in err, banner
        assert banner not in "\n".join(lightning_messages), banner
    assert "Training, epoch 2/2" in err
    assert "100%" in err


def test_two_stage_bars_are_labelled_by_stage(capfd, one_thread):
    from scvi_gen import CFGen

    adata = make_counts_adata(n_cells=60, n_genes=12)
    CFGen.setup_anndata(adata, labels_key="cell_type")
    model = CFGen(adata, n_latent=2, encoder_hidden=(8,), decoder_hidden=(8,), flow_hidden=8)
    model.train(max_epochs_autoencoder=1, max_epochs_flow=1)
    out, err = capfd.readouterr()
    assert out == ""
    assert "Training autoencoder, epoch 1/1" in err
    assert "Training latent prior, epoch 1/1" in err
    assert "GPU available" not in err


def test_info_verbosity_shows_lightning_banners(capfd, lightning_messages, one_thread):
    scvi_gen.settings.verbosity = "info"
    _train_scvi(enable_progress_bar=False)
    out, err = capfd.readouterr()
    # Lightning's handler holds the stream it found at import (pytest's), so read the records.
    assert "GPU available" in "\n".join(lightning_messages)
    assert "Tip:" in "\n".join(lightning_messages)
    assert "Training," not in err  # the bar was turned off explicitly


def test_error_verbosity_has_no_progress_bar(capfd, one_thread):
    scvi_gen.settings.verbosity = 0
    _train_scvi()
    out, err = capfd.readouterr()
    assert out == ""
    assert "Training" not in err
    assert "GPU available" not in err


def test_training_output_restores_logger_levels_and_filters():
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "scvi")]
    before = [lg.level for lg in loggers]
    filters = list(warnings.filters)
    with training_output():
        assert all(lg.level == logging.WARNING for lg in loggers)
    assert [lg.level for lg in loggers] == before
    assert warnings.filters == filters


def test_training_output_keeps_our_warnings():
    with training_output(), pytest.warns(UserWarning, match="undertrained"):
        warnings.warn("undertrained", UserWarning, stacklevel=1)


def test_training_output_hides_lightning_deprecations_until_hint():
    from lightning.pytorch.utilities.rank_zero import LightningDeprecationWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with training_output():
            warnings.warn("old", LightningDeprecationWarning, stacklevel=1)
        scvi_gen.settings.verbosity = "hint"
        with training_output():
            warnings.warn("old", LightningDeprecationWarning, stacklevel=1)
    assert len(caught) == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, Verbosity.error), ("info", Verbosity.info), ("DEBUG", Verbosity.debug), (9, 4)],
)
def test_verbosity_accepts_numbers_and_names(value, expected):
    scvi_gen.settings.verbosity = value
    assert scvi_gen.settings.verbosity == expected
    assert logging.getLogger("scvi_gen").level == Verbosity(expected).logging_level


def test_bad_verbosity_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown verbosity 'loud'; use one of"):
        scvi_gen.settings.verbosity = "loud"
    with pytest.raises(TypeError, match="verbosity must be an int 0-4"):
        scvi_gen.settings.verbosity = 1.5
    assert scvi_gen.settings.verbosity == Verbosity.warning


def test_override_restores():
    with scvi_gen.settings.override(verbosity="debug"):
        assert scvi_gen.settings.verbosity == Verbosity.debug
        assert not scvi_gen.settings.verbosity < Verbosity.info
    assert scvi_gen.settings.verbosity == Verbosity.warning
    assert scvi_gen.settings.progress_bars


def test_package_warnings_reach_stderr_at_default_and_not_when_quiet(capfd):
    log = logging.getLogger("scvi_gen.some_module")
    root_handlers = logging.getLogger().handlers[:]
    logging.getLogger().handlers.clear()  # pytest's own handlers would take the record
    try:
        log.warning("a warning for the user")
        log.info("a progress note")
        scvi_gen.settings.verbosity = "error"
        log.warning("hidden")
    finally:
        logging.getLogger().handlers[:] = root_handlers
    err = capfd.readouterr().err
    assert "a warning for the user" in err
    assert "a progress note" not in err
    assert "hidden" not in err


def test_quiet_mudata_silences_and_restores_user_options(counts_adata):
    import mudata as md

    if "pull_on_update" not in md._core.config.OPTIONS:
        pytest.skip("this mudata has no pull_on_update option")
    before = md._core.config.OPTIONS["pull_on_update"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_mudata():
            md.MuData({"rna": counts_adata, "rna2": counts_adata.copy()})
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]
    assert md._core.config.OPTIONS["pull_on_update"] == before
