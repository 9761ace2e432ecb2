"""Plain-text tables (markdown) without extra dependencies."""

from __future__ import annotations

import logging
import math

import pandas as pd

logger = logging.getLogger(__name__)


def format_value(value: object, digits: int = 4) -> str:
    """Format one cell: floats with ``digits`` significant digits, NaN as an empty cell."""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(df: pd.DataFrame, digits: int = 4, index: bool = False) -> str:
    """Render a data frame as a GitHub-flavoured markdown table.

    Parameters
    ----------
    df
        The table.
    digits
        Significant digits of floats.
    index
        Include the index as the first column.

    Returns
    -------
    The markdown text (ends with a newline).

    Examples
    --------
    >>> print(markdown_table(pd.DataFrame({"metric": ["mmd"], "value": [0.01234]})))
    | metric | value |
    | --- | --- |
    | mmd | 0.01234 |
    <BLANKLINE>
    """
    table = df.reset_index() if index else df
    header = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    rows = [
        "| " + " | ".join(format_value(v, digits) for v in row) + " |"
        for row in table.itertuples(index=False)
    ]
    return "\n".join([header, rule, *rows]) + "\n"
