from __future__ import annotations

import numpy as np
import pandas as pd

from scvi_gen.benchmark import FLOOR, markdown_table, ratio_to_floor, summarize


def test_markdown_table_renders_header_rule_and_rows():
    text = markdown_table(pd.DataFrame({"metric": ["mmd", "auc"], "value": [0.012345, np.nan]}))
    assert text.splitlines() == [
        "| metric | value |",
        "| --- | --- |",
        "| mmd | 0.01235 |",
        "| auc |  |",
    ]


def _results() -> pd.DataFrame:
    rows = []
    for seed, (floor, gen) in enumerate([(0.5, 0.7), (0.5, 0.9)]):
        rows.append(
            {
                "generator": FLOOR,
                "seed": seed,
                "metric": "c2st_auc",
                "scope": "global",
                "value": floor,
            }
        )
        rows.append(
            {"generator": "g", "seed": seed, "metric": "c2st_auc", "scope": "global", "value": gen}
        )
    return pd.DataFrame(rows)


def test_summarize_reports_mean_and_sd_with_floor_first():
    table = summarize(_results())
    assert list(table.columns) == [FLOOR, "g"]
    assert table.loc["c2st_auc", "g"] == "0.8 ± 0.14"
    assert table.loc["c2st_auc", FLOOR] == "0.5 ± 0"


def test_ratio_to_floor_divides_by_the_same_seed():
    assert np.isclose(ratio_to_floor(_results()).loc["c2st_auc", "g"], (1.4 + 1.8) / 2)


def test_summarize_names_an_unknown_scope():
    import pytest

    with pytest.raises(ValueError, match=r"scope 'per_lable'; the results have \['global'\]"):
        summarize(_results(), scope="per_lable")
