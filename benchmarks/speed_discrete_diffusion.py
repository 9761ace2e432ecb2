"""DiscreteDiffusion speed and memory on PBMC3K at 2,000 HVGs.

Usage::

    python benchmarks/speed_discrete_diffusion.py                    # 1 thread, small preset
    python benchmarks/speed_discrete_diffusion.py --threads 2 --epochs 3 --n-cells 1000
    python benchmarks/speed_discrete_diffusion.py --size medium --attention full

Prints the training time per epoch (validation included), the time to generate ``--n-cells``
cells (labels with their training frequencies, library sizes from the per-label model), the
time of one reverse step, and the peak memory: the process's peak resident set size (CPU; it
includes the data) and ``torch.cuda.max_memory_allocated`` on a GPU. On a shared 2-core
machine one torch thread is usually faster than two (the two threads wait on each other).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import warnings

import numpy as np
import scvi
import torch

from scvi_gen import datasets
from scvi_gen.benchmark import peak_rss_mib, timed_train
from scvi_gen.model.discrete_diffusion import DiscreteDiffusion


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-genes", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed")
    parser.add_argument("--n-cells", type=int, default=1000, help="cells generated")
    parser.add_argument("--batch-size", type=int, default=128, help="training minibatch")
    parser.add_argument("--chunk", type=int, default=500, help="generation chunk")
    parser.add_argument("--n-steps", type=int, default=None, help="reverse steps")
    parser.add_argument("--size", default="small", choices=["small", "medium", "large"])
    parser.add_argument("--attention", default="latent", choices=["latent", "full"])
    parser.add_argument("--accelerator", default="auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("scvi").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    scvi.settings.seed = 0

    adata = datasets.pbmc3k()
    adata = adata[adata.obs["cell_type"].notna()].copy()
    train, _ = datasets.train_test_split(adata, "cell_type", test_size=0.25, seed=0)
    print(
        f"PBMC3K train: {train.n_obs} cells x {train.n_vars} genes -> {args.n_genes} HVGs; "
        f"torch threads {args.threads}; preset {args.size}, {args.attention} attention"
    )
    DiscreteDiffusion.setup_anndata(train, labels_key="cell_type")
    kwargs = {"n_top_genes": args.n_genes, "size": args.size, "attention": args.attention}
    if args.n_steps:
        kwargs["n_sampling_steps"] = args.n_steps
    start = time.perf_counter()
    model = DiscreteDiffusion(train, **kwargs)
    n_params = sum(p.numel() for p in model.module.network.parameters())
    print(f"setup (HVGs, bin edges, marginals): {time.perf_counter() - start:.1f} s")
    print(f"network parameters: {n_params:,}; reverse steps: {model.n_sampling_steps}")
    print(
        f"peak RSS before training: {peak_rss_mib():.0f} MiB; load average {os.getloadavg()[0]:.1f}"
    )

    per_epoch, cpu = timed_train(
        model,
        max_epochs=args.epochs,
        early_stopping=False,
        batch_size=args.batch_size,
        accelerator=args.accelerator,
        enable_progress_bar=False,
    )
    print(
        f"training: {per_epoch.mean():.1f} s/epoch wall, {cpu:.1f} s/epoch CPU (epochs: "
        f"{np.round(per_epoch, 1).tolist()}); {train.n_obs / per_epoch.mean():.0f} cells/s"
    )
    print(f"peak RSS after training: {peak_rss_mib():.0f} MiB")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()

    start, cpu = time.perf_counter(), time.process_time()
    syn = model.generate(n_cells=args.n_cells, seed=0, batch_size=args.chunk, progress_bar=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    per_step = seconds / model.n_sampling_steps * 1000 / max(syn.n_obs, 1)
    print(
        f"generate {syn.n_obs} cells x {syn.n_vars} genes: {seconds:.1f} s wall, {cpu:.1f} s "
        f"CPU ({per_step:.2f} s per reverse step per 1,000 cells; chunk {args.chunk})"
    )
    print(f"peak RSS after generation: {peak_rss_mib():.0f} MiB")
    if torch.cuda.is_available():
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    zero_fraction = 1.0 - syn.X.nnz / (syn.n_obs * syn.n_vars)
    print(f"sanity: zero fraction of generated counts {zero_fraction:.3f}")


if __name__ == "__main__":
    main()
