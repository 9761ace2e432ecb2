"""Every ```python block of README.md runs as written and passes.

Blocks run in README order; the blocks of one ``##`` section share a namespace (they build on
each other), each section starts fresh, in a temporary working directory with data from
``$SCVI_GEN_DATA_DIR``. For speed, two narrow substitutions are applied to the code, and only
these (see :func:`for_test`):

- every training-epoch keyword (``max_epochs=N``, ``max_epochs_autoencoder=N``,
  ``max_epochs_flow=N``, also as ``"max_epochs_...": N`` dict entries) becomes 1;
- ``1_000_000`` cells become ``1_000``.

A block that reads a user file (``atlas.h5ad``) gets a small fixture of that name first: 300
labelled PBMC3K cells and 200 genes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import shared_data_file

README = Path(__file__).resolve().parents[1] / "README.md"
_EPOCHS = re.compile(r"""(max_epochs\w*"?\s*[=:]\s*)\d+""")
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def sections() -> dict[str, list[str]]:
    """``{section heading: [python blocks]}`` of README.md, in order."""
    out: dict[str, list[str]] = {}
    for part in re.split(r"^## ", README.read_text(), flags=re.M)[1:]:
        heading, _, body = part.partition("\n")
        blocks = _BLOCK.findall(body)
        if blocks:
            out[heading.strip()] = blocks
    return out


def for_test(code: str) -> str:
    """The documented substitutions: 1 training epoch per stage, 1,000 instead of 10^6 cells."""
    return _EPOCHS.sub(r"\g<1>1", code).replace("1_000_000", "1_000")


def test_substitutions_are_narrow() -> None:
    code = 'm.train(max_epochs=200, max_epochs_flow=600)\nd = {"max_epochs_autoencoder": 20}\n'
    assert (
        for_test(code)
        == 'm.train(max_epochs=1, max_epochs_flow=1)\nd = {"max_epochs_autoencoder": 1}\n'
    )
    assert for_test("n = 1_000_000; seed = 200") == "n = 1_000; seed = 200"


def test_readme_has_python_blocks() -> None:
    assert len(sections()) >= 3


def write_atlas(path: Path) -> None:
    import scanpy as sc

    from scvi_gen import datasets

    adata = datasets.pbmc3k()
    adata = adata[adata.obs["cell_type"].notna()].copy()
    sc.pp.subsample(adata, n_obs=300, random_state=0)
    genes = adata.var_names[adata.X.sum(axis=0).A1.argsort()[::-1][:200]]
    adata[:, genes].copy().write_h5ad(path)


@pytest.mark.parametrize("section", list(sections()))
def test_readme_section_runs(section: str, tmp_path: Path, monkeypatch, one_thread) -> None:
    data_dir = shared_data_file("pbmc3k.h5ad").parent
    if "citeseq" in "".join(sections()[section]):
        shared_data_file("citeseq_pbmc_500.h5mu")
    monkeypatch.setenv("SCVI_GEN_DATA_DIR", str(data_dir))
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    for i, block in enumerate(sections()[section]):
        if "atlas.h5ad" in block and not Path("atlas.h5ad").exists():
            write_atlas(tmp_path / "atlas.h5ad")
        exec(compile(for_test(block), f"README.md [{section}] block {i + 1}", "exec"), namespace)
