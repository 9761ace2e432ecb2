"""Benchmark protocol: runner, tables and plots."""

from ._tables import format_value, markdown_table

__all__ = ["format_value", "markdown_table"]
