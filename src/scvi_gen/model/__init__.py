"""One sub-package per generator."""
