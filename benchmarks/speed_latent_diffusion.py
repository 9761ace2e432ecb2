"""LatentDiffusion speed and memory on PBMC3K: 2,000 HVGs or all 13,714 genes.

Usage::

    python benchmarks/speed_latent_diffusion.py                       # 2,000 HVGs, 1 thread
    python benchmarks/speed_latent_diffusion.py --n-genes 0           # all genes
    python benchmarks/speed_latent_diffusion.py --n-genes 0 --accelerator gpu --threads 4

Prints, for each stage, the training time per epoch (validation included; stage 2 reads the
cached latents of the frozen encoder), the time to generate ``--n-cells`` cells (labels with
their training frequencies, library sizes from the per-label model, the default guided
midpoint solver), and the peak memory: the process's peak resident set size (CPU; it includes
the data) and ``torch.cuda.max_memory_allocated`` on a GPU. On a shared 2-core machine one
torch thread is usually faster than two.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings

import numpy as np
import scvi
import torch

from scvi_gen import datasets
from scvi_gen.benchmark import peak_rss_mib, timed_train
from scvi_gen.metrics import select_hvgs
from scvi_gen.model.latent_diffusion import LatentDiffusion


def peak_gpu_mib() -> str:
    if not torch.cuda.is_available():
        return "n/a"
    return f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"


def timed_stage(model: LatentDiffusion, stage: str, epochs: int, args: argparse.Namespace) -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    epochs_ae, epochs_flow = (epochs, 0) if stage == "autoencoder" else (0, epochs)
    per_epoch, cpu = timed_train(
        model,
        max_epochs_autoencoder=epochs_ae,
        max_epochs_flow=epochs_flow,
        early_stopping=False,
        batch_size=args.batch_size,
        accelerator=args.accelerator,
        enable_progress_bar=False,
    )
    print(
        f"{stage}: {per_epoch.mean():.1f} s/epoch wall, {cpu:.1f} s/epoch CPU (epochs: "
        f"{np.round(per_epoch, 1).tolist()}); peak RSS {peak_rss_mib():.0f} MiB, "
        f"peak GPU {peak_gpu_mib()}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-genes", type=int, default=2000, help="HVGs; 0: all genes")
    parser.add_argument("--epochs-autoencoder", type=int, default=2, help="epochs timed")
    parser.add_argument("--epochs-flow", type=int, default=2, help="epochs timed")
    parser.add_argument("--n-cells", type=int, default=10_000, help="cells generated")
    parser.add_argument("--batch-size", type=int, default=64, help="training minibatch")
    parser.add_argument("--chunk", type=int, default=1024, help="generation chunk")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--init", default="{}", help="JSON of LatentDiffusion(...) arguments")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("scvi", "lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    scvi.settings.seed = 0

    adata = datasets.pbmc3k()
    adata = adata[adata.obs["cell_type"].notna().to_numpy()].copy()
    if args.n_genes:
        adata = adata[:, select_hvgs(adata.X, adata.var_names, args.n_genes)].copy()
    nnz = np.diff(adata.X.tocsr().indptr)
    print(
        f"PBMC3K: {adata.n_obs} cells x {adata.n_vars} genes; expressed genes per cell: "
        f"mean {nnz.mean():.0f}, max {nnz.max()}; threads {args.threads}; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    LatentDiffusion.setup_anndata(adata, labels_key="cell_type")
    model = LatentDiffusion(adata, **json.loads(args.init))
    if args.accelerator == "gpu":
        model.to_device("cuda")
    n_params = sum(p.numel() for p in model.module.parameters())
    print(f"parameters: {n_params:,}; peak RSS before training {peak_rss_mib():.0f} MiB")

    timed_stage(model, "autoencoder", args.epochs_autoencoder, args)
    timed_stage(model, "flow", args.epochs_flow, args)

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start, cpu = time.perf_counter(), time.process_time()
    syn = model.generate(n_cells=args.n_cells, seed=0, batch_size=args.chunk, progress_bar=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(
        f"generate {syn.n_obs} cells x {syn.n_vars} genes: {seconds:.1f} s wall, {cpu:.1f} s "
        f"CPU (chunk {args.chunk}, solver {model.ode_options_['method']} "
        f"{model.ode_options_['n_steps']} steps)"
    )
    print(f"peak RSS after generation: {peak_rss_mib():.0f} MiB; peak GPU {peak_gpu_mib()}")
    zero_fraction = 1.0 - syn.X.nnz / (syn.n_obs * syn.n_vars)
    print(f"sanity: zero fraction of generated counts {zero_fraction:.3f}")


if __name__ == "__main__":
    main()
