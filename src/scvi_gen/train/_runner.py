"""The one place where scvi-gen's Lightning trainers are built and run.

Every Lightning-trained generator (scVI baseline, CFGen, LatentDiffusion, the flows,
DiscreteDiffusion) trains through scvi-tools' :class:`~scvi.train.TrainRunner`; the mixin
:class:`~scvi_gen.base.GenerativeMixin` points them all at :class:`GeneratorTrainRunner`, so
the output rules below hold for all of them at once.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import Any

from scvi import settings as scvi_settings
from scvi.dataloaders import DataSplitter
from scvi.train import TrainRunner
from scvi.train._progress import ProgressBar
from tqdm.auto import tqdm

from scvi_gen._settings import settings, training_output

logger = logging.getLogger(__name__)

#: Progress-bar label of each training stage of the two-stage models.
STAGE_LABELS = {"autoencoder": "Training autoencoder", "flow": "Training latent prior"}


def stage_label(training_plan: Any) -> str:
    """The progress-bar label of a training plan's stage.

    Parameters
    ----------
    training_plan
        A Lightning module; two-stage models use a
        :class:`~scvi_gen.train.GeneratorTrainingPlan` with a ``stage``.

    Returns
    -------
    ``"Training autoencoder"`` / ``"Training latent prior"`` for the two stages, else
    ``"Training"``.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> stage_label(SimpleNamespace(stage="flow"))
    'Training latent prior'
    """
    stage = getattr(training_plan, "stage", None)
    if stage is None:
        return "Training"
    return STAGE_LABELS.get(stage, f"Training {stage}")


class StageProgressBar(ProgressBar):
    """scvi-tools' per-epoch progress bar, on stderr and labelled by stage.

    stdout stays for results (``scvi-gen demo > report.md`` gives a clean report); the label
    tells the two stages of CFGen and LatentDiffusion apart.

    Parameters
    ----------
    label
        Text in front of the bar, e.g. ``"Training autoencoder"``.

    Examples
    --------
    >>> bar = StageProgressBar("Training latent prior")
    >>> bar.label
    'Training latent prior'
    """

    def __init__(self, label: str = "Training") -> None:
        super().__init__(refresh_rate=1)
        self.label = label

    def init_train_tqdm(self, trainer: Any) -> Any:
        """A tqdm bar over epochs, written to stderr."""
        return tqdm(
            total=trainer.max_epochs,
            desc=self.label,
            file=sys.stderr,
            disable=self.is_disabled,
            dynamic_ncols=True,
        )

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Show the epoch next to the stage label."""
        # Skip scvi-tools' override, which replaces the description by "Epoch i/n".
        super(ProgressBar, self).on_train_epoch_start(trainer, pl_module)
        if self.is_enabled:
            epoch = trainer.current_epoch + 1
            self.main_progress_bar.set_description(
                f"{self.label}, epoch {epoch}/{trainer.max_epochs}"
            )


def progress_bar_kwargs(trainer_kwargs: dict[str, Any], label: str) -> dict[str, Any]:
    """Trainer arguments with our stage-labelled stderr bar in place of scvi-tools' bar.

    Parameters
    ----------
    trainer_kwargs
        Arguments for :class:`~scvi.train.Trainer`; not modified.
    label
        Stage label of the bar.

    Returns
    -------
    A new dict: ``enable_progress_bar`` defaults to :attr:`settings.progress_bars`; when the
    bar is on and scvi-tools' simple bar was not turned off (``simple_progress_bar=False``
    keeps Lightning's own per-batch bar), a :class:`StageProgressBar` is added to
    ``callbacks``.

    Examples
    --------
    >>> kwargs = progress_bar_kwargs({"max_epochs": 3}, "Training")
    >>> kwargs["simple_progress_bar"]
    False
    """
    kwargs = dict(trainer_kwargs)
    kwargs.setdefault("enable_progress_bar", settings.progress_bars)
    callbacks = list(kwargs.get("callbacks") or [])
    has_bar = any(isinstance(c, ProgressBar) for c in callbacks)
    if kwargs["enable_progress_bar"] and kwargs.get("simple_progress_bar", True) and not has_bar:
        callbacks.append(StageProgressBar(label))
        kwargs["callbacks"] = callbacks
        # Ours replaces scvi-tools' simple bar (Lightning refuses two progress bars).
        kwargs["simple_progress_bar"] = False
    return kwargs


def per_process_batch_size(batch_size: int, world_size: int) -> int:
    """Cells each process reads per step so that the processes together read ``batch_size``.

    Parameters
    ----------
    batch_size
        Cells per optimisation step over all processes.
    world_size
        Number of training processes.

    Returns
    -------
    ``ceil(batch_size / world_size)`` (at least 1).

    Examples
    --------
    >>> per_process_batch_size(128, 2)
    64
    >>> per_process_batch_size(100, 3)
    34
    """
    return max(1, math.ceil(int(batch_size) / max(int(world_size), 1)))


def share_minibatch(data_splitter: Any, world_size: int) -> None:
    """Make a DataSplitter's ``batch_size`` the minibatch of all processes together.

    scvi-tools' distributed sampler gives every process ``batch_size`` cells per step, so
    ``N`` processes would take steps of ``N x batch_size`` cells and ``N`` times fewer of them
    per epoch: with the same epochs, a model trained on 2 processes was undertrained (CFGen
    on PBMC3K: C2ST 0.617 against 0.553 on one process). Splitting the minibatch keeps the
    optimisation of one process (same steps, same cells per step, same learning rate), so
    hyperparameters chosen on one device carry over. Applied once per splitter (two-stage
    models may reuse one) and only to scvi-tools' :class:`~scvi.dataloaders.DataSplitter`;
    other data modules keep their own loaders.

    Parameters
    ----------
    data_splitter
        The data module of the run.
    world_size
        Number of training processes.
    """
    if world_size <= 1 or not isinstance(data_splitter, DataSplitter):
        return
    loader_kwargs = data_splitter.data_loader_kwargs
    # The minibatch of all processes is kept on the splitter, so a splitter used again
    # (the second stage) is split from it, never from its already split size.
    batch_size = getattr(data_splitter, "_scvi_gen_global_batch_size", None) or (
        loader_kwargs.get("batch_size") or scvi_settings.batch_size
    )
    data_splitter._scvi_gen_global_batch_size = batch_size
    loader_kwargs["batch_size"] = per_process_batch_size(batch_size, world_size)
    logger.info(
        "%d processes read %d cells each per step (batch_size=%d over all processes).",
        world_size,
        loader_kwargs["batch_size"],
        batch_size,
    )


class GeneratorTrainRunner(TrainRunner):
    """scvi-tools' :class:`~scvi.train.TrainRunner` with scvi-gen's output rules.

    - Lightning's banners, tips and deprecation chatter are hidden at the default
      verbosity (see :data:`scvi_gen.settings`), both while the trainer is built (the
      "GPU available" lines) and while it runs.
    - The progress bar goes to stderr and is labelled by stage ("Training autoencoder",
      "Training latent prior"); it is off at verbosity ``"error"`` unless
      ``enable_progress_bar=True`` is passed.
    - On several processes ``batch_size`` is the minibatch of all of them together
      (:func:`share_minibatch`).

    Parameters
    ----------
    model, training_plan, data_splitter, max_epochs
        As for :class:`~scvi.train.TrainRunner`.
    **kwargs
        ``accelerator``, ``devices`` and further :class:`~scvi.train.Trainer` arguments.

    Examples
    --------
    >>> class MyModel(GenerativeMixin, UnsupervisedTrainingMixin, BaseModelClass):
    ...     _train_runner_cls = GeneratorTrainRunner  # inherited from GenerativeMixin
    """

    def __init__(
        self,
        model: Any,
        training_plan: Any,
        data_splitter: Any,
        max_epochs: int,
        **kwargs: Any,
    ) -> None:
        kwargs = progress_bar_kwargs(kwargs, stage_label(training_plan))
        if "ddp" in str(kwargs.get("strategy", "")):
            # Lightning syncs logged validation metrics across ranks after the validation
            # loop; with inference-mode validation that sync updates an inference tensor in
            # place and fails ("Inplace update to inference tensor outside InferenceMode").
            # no_grad validation computes the same values.
            kwargs.setdefault("inference_mode", False)
        with training_output():
            super().__init__(model, training_plan, data_splitter, max_epochs, **kwargs)
        share_minibatch(data_splitter, self.trainer.world_size)

    def __call__(self) -> Any:
        """Fit, with Lightning's output quieted as the verbosity says."""
        with training_output():
            return super().__call__()
