from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd

import scvi_gen.pl
from scvi_gen.benchmark import FLOOR
from scvi_gen.pl import plot_metric_bars, plot_per_class_f1


def test_metric_bars_draw_one_panel_per_metric(tmp_path):
    results = pd.DataFrame(
        {
            "generator": [FLOOR, "a", "b"] * 4,
            "metric": ["mmd"] * 6 + ["c2st"] * 6,
            "scope": "global",
            "value": [0.1, 0.3, 0.2, 0.12, 0.28, 0.25, 0.5, 0.9, 0.7, 0.52, 0.88, 0.75],
        }
    )
    fig = plot_metric_bars(results, ["mmd", "c2st"], n_cols=2, path=tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 0
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["mmd", "c2st"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [FLOOR, "a", "b"]


def test_per_class_f1_marks_rare_classes(tmp_path):
    f1 = pd.DataFrame(
        {
            "label": ["DC", "DC", "B", "B"],
            "train_set": ["real", "real + a", "real", "real + a"],
            "value": [0.4, 0.6, 0.9, 0.92],
        }
    )
    fig = plot_per_class_f1(f1, order=["DC", "B"], rare=["DC"], path=tmp_path / "f1.png")
    assert (tmp_path / "f1.png").stat().st_size > 0
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["DC*", "B"]


def test_plots_do_not_import_the_benchmark() -> None:
    # scvi_gen.benchmark imports scvi_gen.pl for its report: no import back (FLOOR lives in
    # scvi_gen._constants).
    for path in Path(scvi_gen.pl.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("scvi_gen.benchmark"), path.name
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("scvi_gen.benchmark") for a in node.names)
