"""Sphinx configuration of the scvi-gen documentation."""

from __future__ import annotations

from importlib.metadata import version as _package_version

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
typehints_defaults = "comma"
always_document_param_types = False
nitpicky = False
suppress_warnings = ["myst.header", "autosummary.import_cycle", "config.cache"]

# notebooks are executed by the tutorials' own CI step; the docs build only renders them
nb_execution_mode = "off"
myst_enable_extensions = ["colon_fence", "dollarmath"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "scvi": ("https://docs.scvi-tools.org/en/stable/", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "pandas": ("https://pandas.pydata.org/docs/", None),
}
# intersphinx needs the network; a missing inventory only costs links
intersphinx_timeout = 2

html_theme = "sphinx_book_theme"
html_title = "scvi-gen"
html_theme_options = {"repository_url": "https://github.com/scverse/scvi-gen"}
