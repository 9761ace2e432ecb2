from __future__ import annotations

import anndata as ad
import pandas as pd

from scvi_gen import run_demo


def test_demo_writes_every_output(tmp_path):
    result = run_demo(
        tmp_path / "demo",
        dataset="pbmc68k_reduced",
        n_top_genes=300,
        max_epochs=5,
        train_kwargs={"enable_progress_bar": False, "early_stopping": False},
    )
    syn = ad.read_h5ad(result.synthetic_path)
    table = pd.read_csv(result.table_csv)
    assert syn.n_obs > 0 and syn.uns["scvi_gen"]["model"] == "SCVIGenerator"
    assert {"c2st_auc", "knn_label_accuracy"} <= set(table["metric"])
    assert result.table_md.read_text().startswith("# scvi-gen demo")
    assert result.plot_png.stat().st_size > 10_000
