"""Generation on several devices or nodes, through Lightning's predict loop.

``model.generate(n, out="cells.h5ad", accelerator="gpu", devices=4)`` splits the chunks of
a generation call into one contiguous range per process (rank). Each rank generates its
range in Lightning's predict loop and a prediction writer (:class:`ShardWriter`) appends
every chunk to the rank's own shard store (a resumable :class:`GenerationWriter` store);
when every rank is done, rank 0 streams the shards in rank order into the one output
store and removes them. Cells are generated in seed blocks whose random streams come from
``(seed, block)``, so the result is identical to a single-process run of the same call,
whatever the number of processes.

The processes are Lightning's: ``strategy="ddp"`` (the default) relaunches the calling
script once per extra device, exactly as for training, so the whole script (load or train
the model, then ``generate``) runs on every rank; ``"ddp_notebook"``/``"ddp_fork"`` fork
the calling process (CPU, or before CUDA is initialised); several nodes go through
Lightning's own launchers (``srun``, ``torchrun``) with ``num_nodes``.
"""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata.io import sparse_dataset
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from tqdm.auto import tqdm

from scvi_gen._settings import training_output
from scvi_gen.base._streaming import (
    GenerationWriter,
    _close,
    _open,
    is_complete,
    read_generated,
)

logger = logging.getLogger(__name__)

_SHARD_SUFFIX = ".shards"


@dataclass
class GenerationJob:
    """Everything a rank needs to generate its part of one ``generate`` call.

    Parameters
    ----------
    n_cells
        Cells of the whole call.
    chunk
        Cells per chunk (a multiple of the seed block).
    tensors
        Condition tensors of every cell.
    library
        ``(n_cells, 1)`` library sizes or ``None``.
    block_seeds
        Seed of every seed block.
    guidance
        The call's guidance argument.
    obs, var, uns
        Annotations of the output store.
    layers
        Names of the layers written beside ``X``.
    key
        Identifies the call (model, arguments, seed).
    """

    n_cells: int
    chunk: int
    tensors: Mapping[str, torch.Tensor]
    library: torch.Tensor | None
    block_seeds: np.ndarray
    guidance: Any
    obs: pd.DataFrame
    var: pd.DataFrame
    uns: dict[str, Any]
    layers: list[str]
    key: str
    starts: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.starts = list(range(0, self.n_cells, self.chunk))

    def rank_range(self, rank: int, world_size: int) -> tuple[int, int]:
        """Cells ``[start, end)`` of one rank: a contiguous run of whole chunks."""
        n_chunks = len(self.starts)
        first, last = n_chunks * rank // world_size, n_chunks * (rank + 1) // world_size
        return min(first * self.chunk, self.n_cells), min(last * self.chunk, self.n_cells)


class _GenerationModule(LightningModule):
    """The predict loop's module: one chunk of cells per predict step."""

    def __init__(self, model: Any, job: GenerationJob, writer: ShardWriter) -> None:
        super().__init__()
        self.model_ = model
        # Registered so that Lightning moves the generator's weights to the rank's device.
        self.generator = model.module
        self.job = job
        self.writer = writer

    def predict_dataloader(self) -> torch.utils.data.DataLoader:
        """The rank's chunks (those not yet in its shard when resuming)."""
        rank, world = self.trainer.global_rank, self.trainer.world_size
        start, end = self.job.rank_range(rank, world)
        done = self.writer.open_shard(rank, start, end)
        chunks = [
            (s, min(s + self.job.chunk, end)) for s in range(start + done, end, self.job.chunk)
        ]
        return torch.utils.data.DataLoader(chunks, batch_size=None, collate_fn=_identity)

    def predict_step(self, batch: tuple[int, int], batch_idx: int) -> Any:
        """Generate cells ``[start, end)``: ``(X, layers)``."""
        start, end = (int(v) for v in batch)
        job, model = self.job, self.model_
        X = model._generate_cells(
            job.tensors, job.library, start, end, job.block_seeds, job.guidance
        )
        library = None if job.library is None else job.library[start:end]
        return X, model._output_layers(X, library)


def _identity(item: Any) -> Any:
    return item


class ShardWriter(BasePredictionWriter):
    """Write each rank's chunks to its own shard; rank 0 merges the shards at the end.

    Parameters
    ----------
    job
        The generation call.
    out
        Path of the final ``.h5ad``/``.zarr`` store.
    resume
        Continue the shards of an interrupted run.
    progress_bar
        Show rank 0's progress on stderr.
    """

    def __init__(self, job: GenerationJob, out: Path, resume: bool, progress_bar: bool) -> None:
        super().__init__(write_interval="batch")
        self.job, self.out, self.resume = job, Path(out), resume
        self.shard_dir = shard_directory(self.out)
        self.progress_bar = progress_bar
        self._shard: GenerationWriter | None = None
        self._bar: tqdm | None = None

    def open_shard(self, rank: int, start: int, end: int) -> int:
        """Create (or continue) the rank's shard; the number of its cells already written."""
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        job = self.job
        path = self.shard_dir / f"rank{rank:05d}{self.out.suffix}"
        if not self.resume and path.exists():  # left by an earlier run: start afresh
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        self._shard = GenerationWriter(
            path,
            obs=job.obs.iloc[start:end],
            var=job.var,
            uns=job.uns,
            layers=job.layers,
            resume=self.resume,
            key=f"{job.key}:{start}:{end}",
        )
        done = self._shard.n_written
        if rank == 0 and self.progress_bar:
            self._bar = tqdm(
                total=end - start,
                initial=done,
                desc="Generating (rank 0's share)",
                unit="cell",
                file=sys.stderr,
                dynamic_ncols=True,
            )
        return done

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Append the chunk to the rank's shard."""
        X, layers = prediction
        self._shard.append(X, layers)
        if self._bar is not None:
            self._bar.update(X.shape[0])

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Close the shard; after every rank has, rank 0 merges the shards into ``out``."""
        if self._shard is not None:
            self._shard.finish()
            self._shard.close()
        if self._bar is not None:
            self._bar.close()
        trainer.strategy.barrier("scvi_gen_shards_written")
        if trainer.global_rank == 0:
            merge_shards(self.job, self.out, trainer.world_size)
        trainer.strategy.barrier("scvi_gen_shards_merged")


def shard_directory(out: Path) -> Path:
    """Where the ranks' shards of ``out`` live while a run is in progress."""
    return out.with_name(out.name + _SHARD_SUFFIX)


def merge_shards(job: GenerationJob, out: Path, world_size: int) -> None:
    """Stream the ranks' shards, in rank order, into the final store; remove them.

    Parameters
    ----------
    job
        The generation call.
    out
        Path of the final store (replaced if an earlier merge was interrupted).
    world_size
        Number of ranks that wrote shards.
    """
    shard_dir = shard_directory(out)
    if out.exists():  # a merge that was interrupted; the shards are complete
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    with GenerationWriter(
        out, obs=job.obs, var=job.var, uns=job.uns, layers=job.layers, key=job.key
    ) as final:
        for rank in range(world_size):
            shard = shard_dir / f"rank{rank:05d}{out.suffix}"
            if not shard.exists():  # a rank with no chunks (more ranks than chunks)
                continue
            if not is_complete(shard):
                raise RuntimeError(f"Shard {str(shard)!r} is unfinished; rerun with resume=True.")
            _copy_rows(shard, final, job.chunk, job.layers)
        final.finish()
    shutil.rmtree(shard_dir)


def _copy_rows(shard: Path, final: GenerationWriter, chunk: int, layers: list[str]) -> None:
    """Append a finished shard's rows to ``final`` chunk by chunk (memory: one chunk)."""
    store = _open(shard, "r")
    try:
        matrices = {name: sparse_dataset(store[f"layers/{name}"]) for name in layers}
        X = sparse_dataset(store["X"])
        for start in range(0, X.shape[0], chunk):
            end = min(start + chunk, X.shape[0])
            parts = {name: sp.csr_matrix(m[start:end]) for name, m in matrices.items()}
            final.append(sp.csr_matrix(X[start:end]), parts)
    finally:
        _close(store)


def generate_on_devices(
    model: Any,
    job: GenerationJob,
    out: str | Path | None,
    *,
    resume: bool,
    accelerator: str | None,
    devices: Any,
    num_nodes: int | None,
    strategy: Any,
    progress_bar: bool,
) -> Any:
    """Run one generation call on Lightning's processes and return the merged store.

    Parameters
    ----------
    model
        The generator.
    job
        The call (:class:`GenerationJob`).
    out
        ``.h5ad``/``.zarr`` path of the result (required: every rank writes to disk).
    resume
        Continue an interrupted run of the same call.
    accelerator, devices, num_nodes, strategy
        As for :class:`lightning.pytorch.Trainer` (defaults ``"auto"``, ``"auto"``, 1,
        ``"ddp"``).
    progress_bar
        Show rank 0's progress.

    Returns
    -------
    The finished store, opened with :func:`~scvi_gen.base.read_generated`.
    """
    if out is None:
        raise ValueError(
            "Generation on several devices writes every rank's cells to disk: pass "
            "out='cells.h5ad' (or '.zarr'), or leave accelerator/devices/num_nodes/strategy "
            "unset to generate in memory in this process."
        )
    out = Path(out)
    if is_complete(out) and resume:
        return read_generated(out)
    if out.exists() and not resume:
        raise FileExistsError(
            f"{str(out)!r} already exists; remove it, or pass resume=True to continue it."
        )
    writer = ShardWriter(job, out, resume, progress_bar)
    trainer = Trainer(
        accelerator=accelerator or "auto",
        devices=devices if devices is not None else "auto",
        num_nodes=num_nodes or 1,
        strategy=strategy or "ddp",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        use_distributed_sampler=False,
        callbacks=[writer],
    )
    module = _GenerationModule(model, job, writer)
    model.module.eval()
    with training_output():
        trainer.predict(module, return_predictions=False)
    return read_generated(out)
