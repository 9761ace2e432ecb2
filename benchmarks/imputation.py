"""Imputation of hidden values on held-out PBMC3K cells: DiscreteDiffusion against baselines.

Usage::

    python benchmarks/imputation.py                          # 1 thread, seed 0
    python benchmarks/imputation.py --seed 1 --hidden 0.1 --model-dir /tmp/dd_pbmc

Protocol. PBMC3K cells with a label are split 75/25 (stratified, ``--seed``). The 2,000 seurat_v3
HVGs of the training counts are the evaluated genes. In every held-out cell ``--hidden`` (10%)
of the non-zero HVG entries are hidden: set to zero in the counts every method sees. Every
method predicts the hidden entries on the log1p(CP10k) scale of the masked cell,
``log1p(count * 1e4 / library)`` with ``library`` the total counts of the masked cell (what a
method can see); the truth is the hidden count on the same scale. Reported: MAE and Pearson
correlation over all hidden entries, and CPU time.

Methods (trained on the training cells only):

- ``gene_mean``: the per-gene mean of log1p(CP10k) over training cells (zeros included);
  ``gene_mean_nonzero`` averages only the non-zero values (it knows the entry is non-zero).
- ``knn``: mean of the 15 nearest training cells (PCA(30) of log1p(CP10k) HVG expression of
  the masked cell, projected on the training PCA).
- ``scvi``: ``SCVI.get_normalized_expression(library_size="latent")`` (expected counts given
  the masked cell), trained on the training HVG counts with early stopping.
- ``discrete_diffusion``: ``impute(mask=hidden)``, posterior mean (``decode="expected"``);
  ``discrete_diffusion_nonzero`` adds ``exclude_zero=True`` (it knows the entry is non-zero).
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import scvi
import torch
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from scvi_gen import datasets
from scvi_gen.model.discrete_diffusion import DiscreteDiffusion

#: Recommended DiscreteDiffusion settings on PBMC3K (2,000 HVGs, ~2,000 cells, 2 CPU cores).
DD_INIT: dict = {}
DD_TRAIN = {"max_epochs": 10}


def _log_cp10k(counts: np.ndarray, library: np.ndarray) -> np.ndarray:
    return np.log1p(counts * (1e4 / np.maximum(library, 1.0))[:, None])


def _dense(matrix) -> np.ndarray:
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


def hide_entries(
    counts: np.ndarray, columns: np.ndarray, fraction: float, seed: int
) -> np.ndarray:
    """Boolean mask hiding ``fraction`` of the non-zero entries of ``columns`` in each cell."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(counts.shape, dtype=bool)
    for i in range(counts.shape[0]):
        nonzero = columns[counts[i, columns] > 0]
        n_hide = int(round(fraction * len(nonzero)))
        if n_hide:
            mask[i, rng.choice(nonzero, n_hide, replace=False)] = True
    return mask


def predict_gene_mean(train_log: np.ndarray, nonzero: bool) -> Callable[..., np.ndarray]:
    if nonzero:
        sums = train_log.sum(axis=0)
        counts = (train_log > 0).sum(axis=0)
        means = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    else:
        means = train_log.mean(axis=0)
    return lambda masked_log, **_: np.broadcast_to(means, masked_log.shape)


def predict_knn(train_log: np.ndarray, k: int = 15) -> Callable[..., np.ndarray]:
    pca = PCA(n_components=30, random_state=0).fit(train_log)
    index = NearestNeighbors(n_neighbors=k).fit(pca.transform(train_log))

    def predict(masked_log: np.ndarray, **_: object) -> np.ndarray:
        _, neighbours = index.kneighbors(pca.transform(masked_log))
        return train_log[neighbours].mean(axis=1)

    return predict


def predict_scvi(train_hvg: ad.AnnData, seed: int) -> Callable[..., np.ndarray]:
    scvi.settings.seed = seed
    train_hvg = train_hvg.copy()
    scvi.model.SCVI.setup_anndata(train_hvg)
    model = scvi.model.SCVI(train_hvg, n_latent=10)
    model.train(
        max_epochs=200,
        early_stopping=True,
        early_stopping_patience=10,
        enable_progress_bar=False,
    )

    def predict(
        masked_log: np.ndarray, query_hvg: ad.AnnData, library: np.ndarray, **_: object
    ) -> np.ndarray:
        expected = model.get_normalized_expression(query_hvg, library_size="latent")
        return _log_cp10k(np.asarray(expected), library)

    return predict


def predict_discrete_diffusion(
    model: DiscreteDiffusion, nonzero: bool, seed: int
) -> Callable[..., np.ndarray]:
    def predict(
        masked_log: np.ndarray,
        query: ad.AnnData,
        mask_full: np.ndarray,
        hvg_cols: np.ndarray,
        **_: object,
    ) -> np.ndarray:
        out = model.impute(query, mask=mask_full, exclude_zero=nonzero, seed=seed)
        return _dense(out.layers["log1p_norm"])[:, hvg_cols]

    return predict


def _train_discrete_diffusion(train: ad.AnnData, model_dir: Path | None) -> DiscreteDiffusion:
    if model_dir is not None and model_dir.exists():
        print(f"loading DiscreteDiffusion from {model_dir}")
        return DiscreteDiffusion.load(model_dir, adata=train)
    DiscreteDiffusion.setup_anndata(train, labels_key="cell_type")
    model = DiscreteDiffusion(train, **DD_INIT)
    model.train(enable_progress_bar=False, **DD_TRAIN)
    if model_dir is not None:
        model.save(model_dir)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=float, default=0.1, help="fraction of non-zeros hidden")
    parser.add_argument("--model-dir", type=Path, default=None, help="reuse/save the DD model")
    parser.add_argument("--skip", nargs="*", default=[], help="methods to skip, e.g. scvi")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("scvi", "lightning.pytorch", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    scvi.settings.seed = args.seed

    adata = datasets.pbmc3k()
    adata = adata[adata.obs["cell_type"].notna()].copy()
    train, test = datasets.train_test_split(adata, "cell_type", test_size=0.25, seed=args.seed)

    start = time.process_time()
    model = _train_discrete_diffusion(train, args.model_dir)
    dd_train_s = time.process_time() - start
    genes = pd.Index(model.gene_names_)
    hvg_cols = train.var_names.get_indexer(genes)

    test_counts = _dense(test.X).astype(np.float64)
    mask_full = hide_entries(test_counts, hvg_cols, args.hidden, args.seed)
    masked_counts = np.where(mask_full, 0.0, test_counts)
    library = masked_counts.sum(axis=1)
    query = ad.AnnData(sp.csr_matrix(masked_counts.astype(np.float32)), obs=test.obs.copy())
    query.var_names = test.var_names
    mask = mask_full[:, hvg_cols]
    truth = _log_cp10k(test_counts[:, hvg_cols], library)[mask]
    masked_log = _log_cp10k(masked_counts[:, hvg_cols], library)
    train_counts = _dense(train.X).astype(np.float64)
    train_log = _log_cp10k(train_counts[:, hvg_cols], train_counts.sum(axis=1))
    print(
        f"PBMC3K seed {args.seed}: {train.n_obs} train / {test.n_obs} held-out cells, "
        f"{len(genes)} HVGs, {int(mask.sum())} hidden entries ({args.hidden:.0%} of non-zeros)"
    )

    query_hvg = ad.AnnData(
        sp.csr_matrix(masked_counts[:, hvg_cols].astype(np.float32)), obs=test.obs.copy()
    )
    query_hvg.var_names = genes
    methods: dict[str, Callable[[], Callable[..., np.ndarray]]] = {
        "gene_mean": lambda: predict_gene_mean(train_log, nonzero=False),
        "gene_mean_nonzero": lambda: predict_gene_mean(train_log, nonzero=True),
        "knn": lambda: predict_knn(train_log),
        "scvi": lambda: predict_scvi(train[:, genes], args.seed),
        "discrete_diffusion": lambda: predict_discrete_diffusion(model, False, args.seed),
        "discrete_diffusion_nonzero": lambda: predict_discrete_diffusion(model, True, args.seed),
    }
    rows = []
    for name, build in methods.items():
        if name in args.skip:
            continue
        start = time.process_time()
        predict = build()
        fit_s = time.process_time() - start
        start = time.process_time()
        prediction = predict(
            masked_log,
            query=query,
            query_hvg=query_hvg,
            mask_full=mask_full,
            hvg_cols=hvg_cols,
            library=library,
        )[mask]
        predict_s = time.process_time() - start
        if name.startswith("discrete_diffusion"):
            fit_s = dd_train_s
        rows.append(
            {
                "method": name,
                "MAE": float(np.abs(prediction - truth).mean()),
                "pearson": float(np.corrcoef(prediction, truth)[0, 1]),
                "fit_cpu_s": fit_s,
                "impute_cpu_s": predict_s,
            }
        )
        print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    table = pd.DataFrame(rows)
    print()
    print(table.to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
