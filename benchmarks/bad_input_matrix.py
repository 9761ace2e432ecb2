"""Count the outcomes of the bad-input matrix, per generator and in total.

Runs the case table of ``tests/bad_input_cases.py`` (the one ``tests/test_bad_input_matrix*.py``
asserts) and prints how many cases ended as a clear error, a correct result, an unclear error,
a silently wrong result or a crash. Each generator (and the run-once rows: metrics, MuData
CFGen, CLI) runs in its own child process on a tiny model trained one epoch, so that a
segmentation fault counts as a crash of the case that was running and the rest still run.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bad_input_matrix.py [--generators scvi,cfgen] [-v]

``-v`` lists every case whose outcome is not the declared one, with the error it raised.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

logger = logging.getLogger(__name__)
ONCE = "once"


def _quiet() -> None:
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    for name in ("scvi", "lightning", "lightning.pytorch", "lightning.fabric", "anndata"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _cases_and_context(target: str, workdir: Path) -> tuple[list, object]:
    from tests.bad_input_cases import build_model_context, model_cases, once_cases, train_one
    from tests.bad_input_cases_once import OnceContext

    if target == ONCE:
        _, model = train_one("scvi")
        model.save(workdir / "saved")
        return once_cases(), OnceContext(workdir / "work", workdir / "saved")
    adata, model = train_one(target)
    return model_cases(type(model)), build_model_context(target, model, adata, workdir)


def child(target: str, skip: int) -> None:
    """Run the cases of ``target`` from index ``skip``, one tab-separated line per case."""
    from tests.bad_input_cases import observe

    _quiet()
    with tempfile.TemporaryDirectory() as tmp:
        cases, ctx = _cases_and_context(target, Path(tmp))
        print(f"TOTAL\t{len(cases)}", flush=True)
        for index, case in enumerate(cases):
            if index < skip:
                continue
            print(f"START\t{index}\t{case.name}", flush=True)
            start = time.perf_counter()
            outcome, detail = observe(case, ctx)
            seconds = time.perf_counter() - start
            detail = detail.replace("\t", " ").replace("\n", " ")[:300]
            print(
                f"CASE\t{index}\t{case.name}\t{case.expect}\t{outcome}\t{detail}\t{seconds:.3f}",
                flush=True,
            )


def run_target(target: str) -> list[tuple[str, str, str, str]]:
    """``(case, declared, observed, detail)`` of every case of ``target`` (children respawned
    after a crash)."""
    rows: list[tuple[str, str, str, str]] = []
    skip, total = 0, None
    while total is None or skip < total:
        cmd = [sys.executable, __file__, "--child", target, "--skip", str(skip)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        running = None
        for line in proc.stdout.splitlines():
            parts = line.split("\t")
            if parts[0] == "TOTAL":
                total = int(parts[1])
            elif parts[0] == "START":
                running = (int(parts[1]), parts[2])
            elif parts[0] == "CASE":
                rows.append((parts[2], parts[3], parts[4], parts[5]))
                skip, running = int(parts[1]) + 1, None
        if proc.returncode == 0:
            break
        if running is None:  # died before its first case: nothing more can run
            tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
            rows.append(("<setup>", "correct", "crash", f"exit {proc.returncode}: {tail[0]}"))
            break
        rows.append((running[1], "?", "crash", f"process died (exit {proc.returncode})"))
        skip = running[0] + 1
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run every target and print the counts."""
    from tests.bad_input_cases import OUTCOMES
    from tests.generators import NAMES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generators", default=None, help="comma list (default: all)")
    parser.add_argument("--no-once", action="store_true", help="skip metrics/MuData/CLI rows")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--skip", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.skip)
        return 0
    targets = args.generators.split(",") if args.generators else list(NAMES)
    if not args.no_once:
        targets.append(ONCE)
    header = f"| {'generator':<20} | " + " | ".join(OUTCOMES) + " | total |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    totals: Counter = Counter()
    unexpected = []
    for target in targets:
        rows = run_target(target)
        counts = Counter(observed for _, _, observed, _ in rows)
        totals.update(counts)
        cells = " | ".join(f"{counts[o]:>{len(o)}}" for o in OUTCOMES)
        print(f"| {target:<20} | {cells} | {len(rows):>5} |", flush=True)
        unexpected += [(target, *row) for row in rows if row[1] != row[2]]
    cells = " | ".join(f"{totals[o]:>{len(o)}}" for o in OUTCOMES)
    print(f"| {'total':<20} | {cells} | {sum(totals.values()):>5} |")
    print(f"\n{len(unexpected)} cases differ from their declared outcome.")
    if args.verbose:
        for target, name, declared, observed, detail in unexpected:
            print(f"- {target} {name}: declared {declared}, observed {observed}: {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
