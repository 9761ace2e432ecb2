"""Every tutorial in tutorials/ runs end to end with its quick settings and writes its figures.

Each tutorial is a jupytext percent script; it runs here as a plain Python script in a
subprocess (``MPLBACKEND=Agg``, ``SCVI_GEN_TUTORIAL_QUICK=1``: few cells and epochs, one
thread) in a temporary working directory, with data from ``$SCVI_GEN_DATA_DIR``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import shared_data_file

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"

#: Figures each tutorial must write under ``figures/`` of its working directory.
FIGURES = {
    "01_scanpy_workflow.py": [
        "01_umap_real_vs_synthetic.png",
        "01_umap_by_source.png",
        "01_dotplot_markers.png",
        "01_rank_genes_real.png",
        "01_rank_genes_synthetic.png",
        "01_c2st_per_label.png",
    ],
    "02_which_generator.py": [
        "02_measured_quality.png",
        "02_training_curves.png",
        "02_guidance_sweep.png",
    ],
    "03_balance_rare_cell_types.py": ["03_augmentation_plan.png", "03_per_class_f1.png"],
    "04_multimodal_mudata.py": [
        "04_marker_correlations.png",
        "04_predicted_proteins.png",
        "04_predicted_peaks.png",
    ],
    "05_impute_and_denoise.py": ["05_imputed_vs_truth.png", "05_denoise_dotplot.png"],
    "07_large_data.py": ["07_library_sizes.png", "07_cell_types.png"],
}


def test_every_tutorial_is_listed() -> None:
    assert sorted(p.name for p in TUTORIALS.glob("[0-9][0-9]_*.py")) == sorted(FIGURES)


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_tutorial_runs(name: str, tmp_path: Path) -> None:
    data_files = ["citeseq_pbmc_500.h5mu", "multiome_pbmc_1k_small.h5mu"]
    data_dir = [shared_data_file(f) for f in data_files if name.startswith("04")]
    data_dir = (data_dir or [shared_data_file("pbmc3k.h5ad")])[0].parent
    env = {
        **os.environ,
        "MPLBACKEND": "Agg",
        "SCVI_GEN_TUTORIAL_QUICK": "1",
        "SCVI_GEN_DATA_DIR": str(data_dir),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, str(TUTORIALS / name)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for figure in FIGURES[name]:
        path = tmp_path / "figures" / figure
        assert path.is_file() and path.stat().st_size > 1000, f"{name} did not write {figure}"
