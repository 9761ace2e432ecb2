from __future__ import annotations

import anndata as ad
import pandas as pd
import pytest

from scvi_gen.benchmark import BenchmarkConfig, iter_replicates, run_benchmark
from scvi_gen.benchmark import _runner as runner_module
from scvi_gen.benchmark._runner import BASELINES, cell_path
from scvi_gen.model._registry import GENERATORS
from tests.benchmark.conftest import imbalanced_adata


def _config(data_path, **kwargs) -> BenchmarkConfig:
    defaults = {
        "dataset": str(data_path),
        "generators": ["resample"],
        "seeds": [0, 1],
        "n_top_genes": 0,
        "n_pcs": 5,
        "classifiers": ["logistic_regression"],
    }
    return BenchmarkConfig(**{**defaults, **kwargs})


@pytest.fixture
def data_path(tmp_path):
    path = tmp_path / "data.h5ad"
    imbalanced_adata().write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished train/test run (two seeds) shared by the tests that only read or resume it."""
    from tests.benchmark.conftest import FAKE

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(GENERATORS, "resample", FAKE)
        root = tmp_path_factory.mktemp("finished")
        imbalanced_adata().write_h5ad(root / "data.h5ad")
        config = _config(root / "data.h5ad")
        run = run_benchmark(config, root / "run", progress_bar=False, plots=False)
        yield config, run


def test_kfold_generator_is_trained_on_the_training_folds_only(
    fake_generator, data_path, tmp_path
):
    config = _config(data_path, split="kfold", n_folds=2, seeds=[0])
    run = run_benchmark(config, tmp_path / "run", progress_bar=False, report=False)
    folds = list(iter_replicates(ad.read_h5ad(data_path), config))
    assert len(fake_generator.trained_on) == len(folds) == 2
    for seen, fold in zip(fake_generator.trained_on, folds):
        assert set(seen) == set(fold.train.obs_names)
        assert not set(seen) & set(fold.test.obs_names)
    plan = run.results[run.results["scope"] == "plan"]
    counts = plan.pivot_table(index=["split", "label"], columns="metric", values="value")
    target = (counts["n_train"] + counts["n_added"]).groupby("split").max()
    topped = counts[counts["n_added"] > 0]
    for (split, _), row in topped.iterrows():
        assert row["n_train"] + row["n_added"] == target[split]


def test_run_writes_every_number_and_a_summary(finished):
    config, run = finished
    results = run.results
    assert {"global", "per_label_mean", "time", "downstream", "plan"} <= set(results["scope"])
    floor = results[results["generator"] == "floor (real held-out)"]
    assert not floor.duplicated(["split", "seed", "metric", "scope"]).any()
    sets = set(results.loc[results["scope"] == "downstream", "train_set"])
    assert sets == {"real", "real+oversampled", "real+synthetic", "synthetic"}
    text = run.report.read_text()
    for title in ("Distribution metrics", "Ratio to the real-vs-real floor", "Per-class F1"):
        assert title in text
    assert (run.out_dir / "results.csv").exists()
    assert (run.out_dir / "config.json").exists()


def test_resume_recomputes_only_missing_cells(finished, monkeypatch):
    config, run = finished
    calls = []
    original = runner_module.train_generator

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(runner_module, "train_generator", counting)
    cell_path(run.out_dir, "resample", "train-test", 1).unlink()
    again = run_benchmark(config, run.out_dir, progress_bar=False, report=False)
    assert calls == ["resample"]
    assert cell_path(run.out_dir, BASELINES, "train-test", 0).exists()

    def numbers(results):  # timings differ between runs; everything else must not
        kept = results[results["scope"] != "time"]
        return kept.sort_values(list(kept.columns[:-1])).reset_index(drop=True)

    pd.testing.assert_frame_equal(numbers(run.results), numbers(again.results), check_dtype=False)


def test_resuming_with_other_settings_is_refused(finished):
    config, run = finished
    changed = _config(config.dataset, n_pcs=4)
    with pytest.raises(ValueError, match="n_pcs"):
        run_benchmark(changed, run.out_dir, progress_bar=False, report=False)


def test_cli_repeats_a_run_from_its_saved_config(finished, capsys):
    from scvi_gen.cli import main

    _, run = finished
    main(
        ["benchmark", "--config", str(run.out_dir / "config.json"), "--no-progress", "--no-plots"]
    )
    out = capsys.readouterr().out
    assert "Distribution metrics" in out
    assert str(run.out_dir) in out


def test_cli_benchmark_leaves_lightning_logger_levels_as_they_were(finished):
    import logging

    from scvi_gen.cli import main

    _, run = finished
    names = ("scvi", "lightning", "lightning.pytorch", "lightning.fabric")
    before = {name: logging.getLogger(name).level for name in names}
    main(
        ["benchmark", "--config", str(run.out_dir / "config.json"), "--no-progress", "--no-plots"]
    )
    assert {name: logging.getLogger(name).level for name in names} == before
