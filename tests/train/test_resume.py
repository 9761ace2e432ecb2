"""Checkpoint resume of the two-stage latent generators (stage, EMA and best weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from scvi_gen.model.cfgen import CFGen
from scvi_gen.model.latent_diffusion import LatentDiffusion
from scvi_gen.train import checkpoint_stage
from tests.conftest import make_counts_adata
from tests.generators import TINY

FAST = {"batch_size": 32, "enable_progress_bar": False, "early_stopping": False}


class _StopAtFlowEpoch(Callback):
    """Interrupt a run after ``epoch`` epochs of the flow stage (as a killed job would)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if pl_module.stage == "flow" and trainer.current_epoch + 1 >= self.epoch:
            trainer.should_stop = True


@pytest.mark.parametrize("model_cls", [CFGen, LatentDiffusion])
def test_run_stopped_in_stage_two_resumes_in_stage_two_with_its_ema(
    model_cls, tmp_path, monkeypatch
):
    import scvi

    scvi.settings.seed = 0
    monkeypatch.setattr(scvi.settings, "logging_dir", tmp_path)
    adata = make_counts_adata(n_cells=80, n_genes=12)
    model_cls.setup_anndata(adata, labels_key="cell_type")
    model = model_cls(adata, **TINY[model_cls.__name__])
    saver = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_epochs=1)
    model.train(
        max_epochs_autoencoder=2,
        max_epochs_flow=6,
        callbacks=[saver, _StopAtFlowEpoch(3)],
        enable_checkpointing=True,
        default_root_dir=str(tmp_path),
        **FAST,
    )
    last = tmp_path / "last.ckpt"
    assert checkpoint_stage(last) == "flow"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert int(saved["state_dict"]["module.ema_updates"]) > 0
    assert saved["epoch"] == 2  # three flow epochs ran (0, 1, 2)

    # A fresh model (a new process) resumes: the autoencoder comes from the checkpoint.
    resumed = model_cls(adata, **TINY[model_cls.__name__])
    epochs_seen, ema_counts = [], []

    class _Record(Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            epochs_seen.append((pl_module.stage, trainer.current_epoch))

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            ema_counts.append(pl_module.module._n_ema_updates)

    resumed.train(
        max_epochs_autoencoder=2,
        max_epochs_flow=6,
        ckpt_path=str(last),
        callbacks=[_Record()],
        **FAST,
    )
    assert epochs_seen[0] == ("flow", 3)
    assert [e for _, e in epochs_seen] == [3, 4, 5]
    assert resumed.autoencoder_trained_ and resumed.flow_trained_
    # The EMA kept counting from the checkpoint (3 epochs) instead of restarting from 0.
    assert ema_counts[0] == int(saved["state_dict"]["module.ema_updates"]) * 4 // 3
    # Autoencoder weights are those of the interrupted run.
    key = next(k for k in model.module.state_dict() if k.startswith("encoder."))
    np.testing.assert_array_equal(
        resumed.module.state_dict()[key].numpy(), model.module.state_dict()[key].numpy()
    )
    syn = resumed.generate(20, seed=0)
    assert syn.n_obs == 20 and np.all(syn.X.data >= 0)


def test_checkpoint_of_another_stage_is_refused(tmp_path, monkeypatch):
    import scvi

    scvi.settings.seed = 0
    monkeypatch.setattr(scvi.settings, "logging_dir", tmp_path)
    adata = make_counts_adata(n_cells=60, n_genes=10)
    CFGen.setup_anndata(adata, labels_key="cell_type")
    model = CFGen(adata, **TINY["CFGen"])
    saver = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_epochs=1)
    model.train(
        max_epochs_autoencoder=1,
        max_epochs_flow=0,
        callbacks=[saver],
        enable_checkpointing=True,
        **FAST,
    )
    assert checkpoint_stage(tmp_path / "last.ckpt") == "autoencoder"
    plan = CFGen._training_plan_cls(model.module, stage="flow")
    with pytest.raises(ValueError, match="stage 'autoencoder', not 'flow'"):
        plan.on_load_checkpoint(torch.load(tmp_path / "last.ckpt", weights_only=True))
