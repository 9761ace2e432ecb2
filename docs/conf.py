"""Sphinx configuration of the scvi-gen documentation."""

from __future__ import annotations

import importlib
import os
import re
import socket
from importlib.metadata import version as _package_version
from pathlib import Path

project = "scvi-gen"
author = "scvi-gen developers"
copyright = "2026, scvi-gen developers"
release = _package_version("scvi-gen")
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "sphinx_autodoc_typehints",
]
autosummary_generate = True
autodoc_member_order = "groupwise"
autodoc_default_options = {"members": True, "inherited-members": False}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
# Attributes as :ivar: fields: a NamedTuple's fields are not described twice
napoleon_use_ivar = True
typehints_defaults = "comma"
always_document_param_types = False
nitpicky = False
suppress_warnings = ["myst.header", "autosummary.import_cycle", "config.cache"]

# The tutorials (docs/tutorials links to tutorials/) are jupytext percent scripts, executed by
# tests/test_tutorials.py; the docs build only renders them.
nb_execution_mode = "off"
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
myst_enable_extensions = ["colon_fence", "dollarmath"]
source_suffix = {
    ".rst": "restructuredtext",
    ".md": "myst-nb",
    ".ipynb": "myst-nb",
    ".py": "myst-nb",
}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "conf.py", "generated/*.py"]

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "scvi": ("https://docs.scvi-tools.org/en/stable/", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "pandas": ("https://pandas.pydata.org/docs/", None),
}
# intersphinx needs the network: offline (no route to docs.python.org, or
# SCVI_GEN_DOCS_OFFLINE=1) no inventory is mapped, so -W does not fail on unreachable
# inventories; an inventory that fails while online still only costs links.
intersphinx_timeout = 2
suppress_warnings.append("intersphinx.fetch")


def _online(host: str = "docs.python.org") -> bool:
    try:
        socket.create_connection((host, 443), timeout=2).close()
    except OSError:
        return False
    return True


if os.environ.get("SCVI_GEN_DOCS_OFFLINE") == "1" or not _online():
    intersphinx_mapping = {}

html_theme = "sphinx_book_theme"
html_title = "scvi-gen"
html_theme_options = {"repository_url": "https://github.com/scverse/scvi-gen"}


_SUBPACKAGES = (
    "base",
    "baselines",
    "benchmark",
    "datasets",
    "metrics",
    "nn",
    "pl",
    "preprocessing",
)


def missing_api_names() -> list[str]:
    """Public names of ``scvi_gen`` and its subpackages that api.md does not list."""
    package = importlib.import_module("scvi_gen")
    text = (Path(__file__).parent / "api.md").read_text()
    listed = set(re.findall(r"^   ([\w.]+)$", text, re.M))
    listed |= set(re.findall(r"`scvi_gen\.([\w.]+)`", text))
    documented = {id(_resolve(package, name)) for name in listed}
    names = {n for n in package.__all__ if n not in _SUBPACKAGES and n != "__version__"}
    for sub in _SUBPACKAGES:
        module = importlib.import_module(f"scvi_gen.{sub}")
        # a subpackage may re-export a top-level name (baselines.SCVIGenerator): one page
        names |= {n if n in package.__all__ else f"{sub}.{n}" for n in module.__all__}
    # a re-export of a documented class or function (metrics.CommonSpace) needs no page
    names = {
        n
        for n in names
        if n in listed
        or not (callable(_resolve(package, n)) and id(_resolve(package, n)) in documented)
    }
    return sorted(names - listed)


def _resolve(package, name: str):
    obj = package
    for part in name.split("."):
        obj = getattr(obj, part, None)
    return obj


def _check_api(app) -> None:
    from sphinx.util import logging as sphinx_logging

    missing = missing_api_names()
    if missing:
        sphinx_logging.getLogger(__name__).warning(
            "docs/api.md does not list these public names: %s", ", ".join(missing)
        )


def setup(app) -> None:
    app.connect("builder-inited", _check_api)
