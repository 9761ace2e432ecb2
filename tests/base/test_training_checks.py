from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from scvi_gen.base._training_checks import (
    UndertrainedWarning,
    still_improving,
    warn_if_undertrained,
)


def test_a_falling_curve_is_still_improving():
    assert still_improving(np.linspace(3.0, 1.0, 50)) == (True, 49)


def test_a_flat_tail_is_not_improving():
    curve = np.concatenate([np.linspace(3.0, 1.0, 30), np.full(20, 1.0)])
    improving, _ = still_improving(curve)
    assert not improving


def test_a_curve_whose_best_epoch_is_early_is_not_improving():
    curve = np.concatenate([np.linspace(3.0, 1.0, 20), np.linspace(1.1, 2.0, 30)])
    assert still_improving(curve) == (False, 19)


def test_warns_when_the_limit_was_reached_while_improving():
    history = {"validation_loss": pd.DataFrame({"validation_loss": np.linspace(3, 1, 40)})}
    with pytest.warns(UndertrainedWarning, match=r"flow stage stopped at its epoch limit \(40\)"):
        assert warn_if_undertrained(history, 40, model="CFGen", stage="flow")


def test_no_warning_after_early_stopping():
    history = {"validation_loss": pd.DataFrame({"validation_loss": np.linspace(3, 1, 30)})}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_undertrained(history, 40, model="CFGen")


def test_no_warning_without_validation_history():
    assert not warn_if_undertrained({"train_loss": [1, 2]}, 2, model="CFGen")


def test_a_model_stopped_while_still_learning_says_so():
    import scvi

    from scvi_gen.baselines import SCVIGenerator
    from tests.conftest import make_counts_adata

    scvi.settings.seed = 0
    adata = make_counts_adata(n_cells=200, n_genes=20)
    SCVIGenerator.setup_anndata(adata, labels_key="cell_type")
    model = SCVIGenerator(adata, n_hidden=16, n_latent=4)
    with pytest.warns(UndertrainedWarning, match="SCVIGenerator stopped at its epoch limit"):
        model.train(
            max_epochs=20,
            early_stopping=False,
            enable_progress_bar=False,
            check_val_every_n_epoch=1,
            batch_size=16,
        )
