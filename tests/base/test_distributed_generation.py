"""Generation on several processes (Lightning DDP on the CPU) gives the cells of one process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scvi_gen.base._distributed_generation import GenerationJob, merge_shards
from scvi_gen.base._streaming import GenerationWriter
from tests.generators import NAMES, _spec

#: Models generated on 2 processes in one relaunched script (one process-group start).
_DDP_MODELS = [n for n in NAMES if n in ("cfgen", "scvi", "maf", "discrete_diffusion")]

_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch

    torch.set_num_threads(1)
    from scvi_gen.model._registry import get_generator

    root = sys.argv[1]
    for name in sys.argv[2].split(","):
        model = get_generator(name).model_class().load(f"{root}/{name}")
        syn = model.generate(
            600, seed=3, batch_size=256, out=f"{root}/{name}.h5ad", accelerator="cpu",
            devices=2, strategy="ddp", progress_bar=False,
        )
        syn.file.close()
    """
)


@pytest.mark.usefixtures("one_thread")
def test_two_processes_generate_the_cells_of_one(trained_generators, tmp_path: Path) -> None:
    for name in _DDP_MODELS:
        _spec(name)
        trained_generators[name][1].save(tmp_path / name)
    script = tmp_path / "generate_ddp.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path), ",".join(_DDP_MODELS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for name in _DDP_MODELS:
        model = trained_generators[name][1]
        one = model.generate(600, seed=3, progress_bar=False)
        several = ad.read_h5ad(tmp_path / f"{name}.h5ad")
        np.testing.assert_array_equal(several.X.toarray(), one.X.toarray(), err_msg=name)
        pd.testing.assert_frame_equal(several.obs, one.obs, check_dtype=False)
        assert not (tmp_path / f"{name}.h5ad.shards").exists()


def test_generation_on_devices_needs_an_output_store(trained_generators) -> None:
    _, model = trained_generators["cfgen"]
    with pytest.raises(ValueError, match="pass out='cells.h5ad'"):
        model.generate(10, seed=0, devices=1, accelerator="cpu")


def test_ranks_get_contiguous_runs_of_whole_chunks() -> None:
    job = _job(n_cells=1300, chunk=256)
    ranges = [job.rank_range(r, 3) for r in range(3)]
    assert ranges[0][0] == 0 and ranges[-1][1] == 1300
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(start % 256 == 0 for start, _ in ranges)


def test_more_ranks_than_chunks_leave_some_ranks_empty() -> None:
    job = _job(n_cells=300, chunk=256)
    ranges = [job.rank_range(r, 4) for r in range(4)]
    assert sum(end - start for start, end in ranges) == 300
    assert sum(end > start for start, end in ranges) == 2


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_merge_puts_the_shards_in_rank_order(tmp_path: Path, suffix: str) -> None:
    job = _job(n_cells=6, chunk=2)
    out = tmp_path / f"cells{suffix}"
    shards = out.with_name(out.name + ".shards")
    shards.mkdir()
    rows = np.arange(6, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)
    for rank, (start, end) in enumerate([(0, 4), (4, 6)]):
        with GenerationWriter(
            shards / f"rank{rank:05d}{suffix}",
            obs=job.obs.iloc[start:end],
            var=job.var,
            uns=job.uns,
            key=f"{job.key}:{start}:{end}",
        ) as shard:
            shard.append(sp.csr_matrix(rows[start:end]))
            shard.finish()
    merge_shards(job, out, world_size=2)
    merged = ad.read_h5ad(out) if suffix == ".h5ad" else ad.read_zarr(out)
    np.testing.assert_array_equal(merged.X.toarray(), rows)
    assert list(merged.obs_names) == list(job.obs.index)
    assert not shards.exists()


def _job(n_cells: int, chunk: int) -> GenerationJob:
    obs = pd.DataFrame(index=[f"gen_{i}" for i in range(n_cells)])
    return GenerationJob(
        n_cells=n_cells,
        chunk=chunk,
        tensors={},
        library=None,
        block_seeds=np.zeros(1, dtype=np.uint32),
        guidance=None,
        obs=obs,
        var=pd.DataFrame(index=["a", "b", "c"]),
        uns={"scvi_gen": {"model": "test"}},
        layers=[],
        key="k",
    )
