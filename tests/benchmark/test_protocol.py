from __future__ import annotations

import numpy as np
import pytest

from scvi_gen.benchmark import BenchmarkConfig, FeatureSet, iter_replicates, training_sets
from scvi_gen.benchmark._downstream import AUGMENTED, OVERSAMPLED
from tests.benchmark.conftest import imbalanced_adata


def _kfold_config(**kwargs) -> BenchmarkConfig:
    return BenchmarkConfig(
        generators=["scvi"], split="kfold", n_folds=3, seeds=[0], n_top_genes=0, **kwargs
    )


def _features(adata, source: str) -> FeatureSet:
    x = np.asarray(adata.X.todense())
    return FeatureSet.of(x, adata.obs["cell_type"], adata.obs_names, source)


def test_kfold_folds_partition_the_cells_and_never_overlap_with_train():
    adata = imbalanced_adata()
    replicates = list(iter_replicates(adata, _kfold_config()))
    assert [r.split for r in replicates] == ["fold0", "fold1", "fold2"]
    held_out = [set(r.test.obs_names) for r in replicates]
    assert set().union(*held_out) == set(adata.obs_names)
    assert sum(len(h) for h in held_out) == adata.n_obs
    for replicate in replicates:
        assert not set(replicate.train.obs_names) & set(replicate.test.obs_names)


def test_augmentation_tops_every_class_exactly_up_to_q3_without_held_out_cells():
    adata = imbalanced_adata()
    for replicate in iter_replicates(adata, _kfold_config()):
        counts = replicate.train.obs["cell_type"].value_counts()
        target = int(np.ceil(np.percentile(counts.to_numpy(), 75)))
        plan = replicate.plans("cell_type")["augmentation"]
        assert plan  # the rare class needs cells
        # Stand-in synthetic cells: re-labelled copies of training cells, named like generated.
        donors = replicate.train[np.arange(sum(plan.values())) % replicate.train.n_obs].copy()
        donors.obs["cell_type"] = np.repeat(list(plan), list(plan.values()))
        donors.obs_names = [f"gen_{i}" for i in range(donors.n_obs)]
        real = _features(replicate.train, "real")
        sets = training_sets(real, plan, seed=0, augmentation=_features(donors, "synthetic"))
        held_out = set(replicate.test.obs_names)
        for name in (AUGMENTED, OVERSAMPLED):
            got = sets[name].counts()
            for label, n in counts.items():
                assert got[label] == max(n, target), (name, label)
            assert not set(sets[name].ids) & held_out
        synthetic = sets[AUGMENTED].source == "synthetic"
        assert all(i.startswith("gen_") for i in sets[AUGMENTED].ids[synthetic])
        assert synthetic.sum() == sum(plan.values())


def test_train_test_plans_match_held_out_and_training_counts():
    adata = imbalanced_adata()
    config = BenchmarkConfig(generators=["scvi"], seeds=[3], n_top_genes=0)
    (replicate,) = iter_replicates(adata, config)
    plans = replicate.plans("cell_type")
    assert plans["evaluation"] == replicate.test.obs["cell_type"].value_counts().to_dict()
    assert plans["synthetic_only"] == replicate.train.obs["cell_type"].value_counts().to_dict()
    assert replicate.key == "train-test_seed3"


def test_config_round_trip_keeps_full_generator_settings(tmp_path):
    config = BenchmarkConfig(
        generators=["scvi"], seeds=[0, 1], overrides={"scvi": {"train": {"max_epochs": 7}}}
    )
    config.save(tmp_path / "config.json")
    loaded = BenchmarkConfig.load(tmp_path / "config.json")
    settings = loaded.overrides["scvi"]
    assert settings["train"]["max_epochs"] == 7
    assert settings["train"]["early_stopping"] is True  # registry default, made explicit
    assert settings["target"] == "scvi_gen.baselines.SCVIGenerator"
    assert loaded.resolved().to_dict() == config.resolved().to_dict()


def test_unknown_generator_or_split_is_rejected():
    with pytest.raises(KeyError, match="Unknown generator"):
        BenchmarkConfig(generators=["nope"])
    with pytest.raises(ValueError, match="split"):
        BenchmarkConfig(split="loo")
