"""CFGen speed on PBMC3K (all 13,714 genes): training time per epoch and generation throughput.

Usage::

    python benchmarks/speed_cfgen.py                       # 2 threads, 10,000 cells
    python benchmarks/speed_cfgen.py --threads 2 --n-cells 10000 --solvers midpoint:20 euler:30 dopri5

Trains both stages for a few epochs (the per-epoch time does not depend on how long one
trains), then times ``generate`` of ``--n-cells`` cells (labels drawn with their training
frequencies, library sizes from the per-label model, NB counts) for each solver. The target:
10,000 cells in < 30 s on 2 cores with the default solver.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
import warnings

import numpy as np
import scvi
import torch

from scvi_gen import datasets
from scvi_gen.benchmark import EpochTimer
from scvi_gen.model.cfgen import CFGen


def _solver(spec: str) -> dict[str, object]:
    method, _, steps = spec.partition(":")
    return {"method": method, "n_steps": int(steps)} if steps else {"method": method}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-cells", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=5, help="epochs timed per stage")
    parser.add_argument("--batch-size", type=int, default=1024, help="generation chunk")
    parser.add_argument(
        "--guidance",
        type=float,
        nargs="+",
        default=[1.0, 1.5],
        help="label guidance weights to time (1.0: one field evaluation per step; else two)",
    )
    parser.add_argument(
        "--solvers", nargs="+", default=["default"], help="'default', 'euler:30', 'dopri5' ..."
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("scvi").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    scvi.settings.seed = 0

    adata = datasets.pbmc3k()
    adata = adata[adata.obs["cell_type"].notna()].copy()
    print(f"PBMC3K: {adata.n_obs} cells x {adata.n_vars} genes; torch threads {args.threads}")
    CFGen.setup_anndata(adata, labels_key="cell_type")
    model = CFGen(adata)

    timers = {"autoencoder": EpochTimer(), "flow": EpochTimer()}
    model.train(
        max_epochs_autoencoder=args.epochs,
        max_epochs_flow=0,
        early_stopping=False,
        check_val_every_n_epoch=1,
        enable_progress_bar=False,
        callbacks=[timers["autoencoder"]],
    )
    model.train(
        max_epochs_autoencoder=0,
        max_epochs_flow=args.epochs,
        early_stopping=False,
        check_val_every_n_epoch=1,
        enable_progress_bar=False,
        callbacks=[timers["flow"]],
    )
    for stage, timer in timers.items():
        # The first epoch pays one-off costs (data loader start, lazy init): report the rest.
        steady = timer.seconds[1:] or timer.seconds
        print(
            f"train {stage:11s}: {np.median(steady):6.2f} s/epoch (median of {len(steady)}; "
            f"first epoch {timer.seconds[0]:.2f} s)"
        )

    model.generate(100, seed=1, progress_bar=False)  # warm-up
    for spec, guidance in itertools.product(args.solvers, args.guidance):
        if spec != "default":
            model.set_ode_solver(**_solver(spec))
        options = model.ode_options_
        start = time.perf_counter()
        syn = model.generate(
            args.n_cells,
            seed=0,
            guidance=guidance,
            batch_size=args.batch_size,
            progress_bar=False,
        )
        seconds = time.perf_counter() - start
        label = f"{options['method']}" + (
            f" {options['n_steps']} steps" if options["method"] != "dopri5" else ""
        )
        label += f", guidance {guidance:g}"
        print(
            f"generate {syn.n_obs} cells x {syn.n_vars} genes [{label}]: {seconds:6.2f} s "
            f"({syn.n_obs / seconds:,.0f} cells/s; {syn.X.nnz / syn.n_obs:.0f} non-zeros/cell)"
        )


if __name__ == "__main__":
    main()
