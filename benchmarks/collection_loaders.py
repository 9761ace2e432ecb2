"""Read throughput of the two collection loaders scvi-tools 1.4.2 ships, on the same files.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/collection_loaders.py
    OMP_NUM_THREADS=2 python benchmarks/collection_loaders.py --lamindb-python /tmp/lvenv/bin/python

scvi-tools 1.4.2 offers two ways to train from files that do not fit in memory together:

- ``CollectionAdapter`` over anndata's ``AnnCollection`` (what scvi-gen uses, through
  :func:`scvi_gen.base.open_collection`): scvi-tools' ``AnnDataLoader`` asks for a whole
  minibatch of row indices at once and the collection reads them per file;
- ``MappedCollectionDataModule`` over lamindb's ``MappedCollection``: a map-style torch
  dataset, so the torch ``DataLoader`` reads a minibatch one cell at a time
  (``MappedCollection`` has ``__getitem__`` only) unless several worker processes share it.

This script times reading ``--batches`` minibatches of ``--batch-size`` random cells (counts and
the cell-type label) from the collection of ``scale_train_collection.py`` (built when missing)
both ways, single process, and prints cells/s. lamindb is not a dependency of scvi-gen (it
needs an instance for scvi-tools' data module, and pins its own stack): pass a Python that has
it with ``--lamindb-python``, e.g. a virtual environment made with ``pip install lamindb``.
State the load when reporting; run nothing else beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from scale_train_collection import build_collection

_MAPPED = """
import json, sys, time
import numpy as np
from lamindb.core import MappedCollection

paths, batches, batch_size = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
collection = MappedCollection(paths, layers_keys="X", obs_keys="cell_type", parallel=False)
rng = np.random.default_rng(0)
first = [collection[i] for i in rng.integers(0, len(collection), 8)]  # opens the files
start = time.perf_counter()
for _ in range(batches):
    items = [collection[int(i)] for i in rng.integers(0, len(collection), batch_size)]
    x = np.stack([item["X"] for item in items])
seconds = time.perf_counter() - start
print(json.dumps({"loader": "lamindb MappedCollection", "cells_per_s": batches * batch_size / seconds}))
"""


def read_anncollection(paths: list[str], batches: int, batch_size: int) -> dict[str, float]:
    """Cells/s of scvi-tools' training loader over :func:`scvi_gen.base.open_collection`."""
    import torch
    from scvi.dataloaders import DataSplitter

    import scvi_gen

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    collection = scvi_gen.base.open_collection(paths, layer="counts")
    scvi_gen.SCVIGenerator.setup_anndata(collection, layer="counts", labels_key="cell_type")
    manager = scvi_gen.SCVIGenerator._get_most_recent_anndata_manager(collection, required=True)
    splitter = DataSplitter(manager, train_size=1.0, batch_size=batch_size)
    splitter.setup()
    loader = iter(splitter.train_dataloader())
    next(loader)  # opens the files
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    seconds = time.perf_counter() - start
    return {
        "loader": "scvi-tools CollectionAdapter",
        "cells_per_s": batches * batch_size / seconds,
    }


def read_mapped(python: str, paths: list[str], batches: int, batch_size: int) -> dict[str, float]:
    """Cells/s of lamindb's MappedCollection read as a torch DataLoader reads it (by cell)."""
    result = subprocess.run(
        [python, "-c", _MAPPED, json.dumps(paths), str(batches), str(batch_size)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        return {"loader": "lamindb MappedCollection", "error": result.stderr.strip()[-300:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--cells-per-file", type=int, default=250_000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lamindb-python", default=sys.executable)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/scvi_gen_bench"))
    args = parser.parse_args()
    paths = [str(p) for p in build_collection(args.cache, args.files, args.cells_per_file)]
    print(
        f"threads {os.environ.get('OMP_NUM_THREADS', '1')}; {args.files} files, "
        f"{args.files * args.cells_per_file} cells; {args.batches} minibatches of "
        f"{args.batch_size} random cells"
    )
    rows = [
        read_anncollection(paths, args.batches, args.batch_size),
        read_mapped(args.lamindb_python, paths, args.batches, args.batch_size),
    ]
    print("| loader | cells/s |")
    print("| --- | --- |")
    for row in rows:
        value = f"{row['cells_per_s']:.0f}" if "cells_per_s" in row else row["error"]
        print(f"| {row['loader']} | {value} |")


if __name__ == "__main__":
    main()
