"""Training on 2 CPU processes (Lightning DDP, gloo) for every scvi-tools-trained generator.

One script, relaunched by Lightning for the second process, trains each generator for one
epoch (each stage of the two-stage ones) on the same tiny data and saves it; only rank 0
writes. The saved models must generate cells that pass the checks of single-process training.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from scvi_gen.model._registry import get_generator
from tests.generators import _DATAMODULE, NAMES, _kwargs, _spec

#: The scvi-tools-trained generators (the SDV baselines have no Lightning loop).
DDP_NAMES = [n for n in NAMES if _spec(n)[1].__name__ in _DATAMODULE]

_SCRIPT = textwrap.dedent(
    """
    import json
    import os
    import sys

    import scvi
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[3])
    from tests.conftest import make_counts_adata
    from scvi_gen.model._registry import get_generator

    root, specs = sys.argv[1], json.loads(sys.argv[2])
    for name, init in specs.items():
        spec = get_generator(name)
        cls = spec.model_class()
        scvi.settings.seed = 0
        adata = make_counts_adata(n_cells=120, n_genes=20)
        cls.setup_anndata(adata, labels_key="cell_type", **spec.setup_kwargs)
        model = cls(adata, **init)
        two_stage = cls.__name__ in ("CFGen", "LatentDiffusion")
        epochs = (
            {"max_epochs_autoencoder": 1, "max_epochs_flow": 1} if two_stage else {"max_epochs": 1}
        )
        model.train(
            **{**spec.train_kwargs, **epochs},
            accelerator="cpu",
            devices=2,
            strategy="ddp_find_unused_parameters_true",
            enable_progress_bar=False,
        )
        model.save(f"{root}/{name}", overwrite=True)
        with open(f"{root}/{name}.rank{torch.distributed.get_rank()}", "w") as fh:
            fh.write(str(torch.distributed.get_world_size()))
    """
)


@pytest.fixture(scope="module")
def ddp_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import json

    root = tmp_path_factory.mktemp("ddp")
    specs = {}
    for name in DDP_NAMES:
        spec, cls = _spec(name)
        specs[name] = _kwargs(cls, spec)
    script = root / "train_ddp.py"
    script.write_text(_SCRIPT)
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        [sys.executable, str(script), str(root), json.dumps(specs), str(repo)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return root


@pytest.mark.parametrize("name", DDP_NAMES)
def test_both_ranks_trained_in_one_process_group(ddp_models: Path, name: str) -> None:
    for rank in (0, 1):
        assert (ddp_models / f"{name}.rank{rank}").read_text() == "2"


@pytest.mark.parametrize("name", DDP_NAMES)
def test_a_model_trained_on_two_processes_generates_valid_cells(
    ddp_models: Path, name: str
) -> None:
    model = get_generator(name).model_class().load(ddp_models / name)
    syn = model.generate(labels={"type0": 20, "type1": 10}, seed=0)
    values = syn.X.toarray()
    assert syn.shape == (30, len(model._generated_var_names()))
    assert np.all(np.isfinite(values)) and np.all(values >= 0)
    if syn.uns["scvi_gen"]["output"] == "counts":
        np.testing.assert_array_equal(values, np.round(values))
        assert values.sum() > 0
    assert syn.obs["cell_type"].astype(str).tolist() == ["type0"] * 20 + ["type1"] * 10
    assert model.history  # trained through the Lightning loop, with its history
