from __future__ import annotations

import argparse

import anndata as ad
import numpy as np
import pytest

from scvi_gen.cli import build_parser, main
from tests.conftest import make_counts_adata

COMMANDS = ["demo", "split", "train", "generate", "evaluate", "benchmark"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: scvi-gen " + command in capsys.readouterr().out


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


def test_every_option_has_help_and_shows_its_default(capsys):
    parser, commands = _subparsers()
    assert sorted(commands) == sorted(COMMANDS)
    for name, sub in [("scvi-gen", parser), *commands.items()]:
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{name} {action.option_strings} has no help text"
    text = commands["split"].format_help() + commands["train"].format_help()
    assert "(default: 0.2)" in text  # --test-size
    assert "(default: auto)" in text  # --accelerator
    assert "(default: None)" not in text  # None defaults say what happens in words


def _one_line(capsys, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("scvi-gen: error: ")
    assert "Traceback" not in err and err.count("\n") == 1
    return err


def test_train_generate_evaluate_round_trip(tmp_path, capsys):
    adata = make_counts_adata(n_cells=160, n_genes=40)
    train, test = adata[:120].copy(), adata[120:].copy()
    train.write_h5ad(tmp_path / "train.h5ad")
    test.write_h5ad(tmp_path / "test.h5ad")
    main(
        [
            "train",
            "--data", str(tmp_path / "train.h5ad"),
            "--labels-key", "cell_type",
            "--max-epochs", "2",
            "--train-kwargs", '{"early_stopping": false, "enable_progress_bar": false}',
            "--out", str(tmp_path / "model"),
        ]
    )  # fmt: skip
    main(
        [
            "generate",
            "--model", str(tmp_path / "model"),
            "--labels", "type0=30,type1=20",
            "--out", str(tmp_path / "syn.h5ad"),
        ]
    )  # fmt: skip
    syn = ad.read_h5ad(tmp_path / "syn.h5ad")
    assert syn.obs["cell_type"].value_counts().to_dict() == {"type0": 30, "type1": 20, "type2": 0}
    main(
        [
            "evaluate",
            "--train", str(tmp_path / "train.h5ad"),
            "--test", str(tmp_path / "test.h5ad"),
            "--synthetic", str(tmp_path / "syn.h5ad"),
            "--labels-key", "cell_type",
            "--n-hvg", "30",
            "--out", str(tmp_path / "table.csv"),
        ]
    )  # fmt: skip
    assert "c2st_auc" in capsys.readouterr().out
    assert (tmp_path / "table.csv").exists()


def test_bad_labels_argument_is_a_clear_error(tmp_path, capsys):
    code = main(["generate", "--model", str(tmp_path), "--labels", "B=x", "--out", "o.h5ad"])
    assert "NAME=COUNT" in _one_line(capsys, code)


def test_bad_data_is_one_line_on_stderr(tmp_path, capsys):
    adata = make_counts_adata(n_cells=20, n_genes=10)
    adata.X = adata.X / 2.0  # not counts
    adata.write_h5ad(tmp_path / "half.h5ad")
    code = main(["train", "--data", str(tmp_path / "half.h5ad"), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("scvi-gen: error: adata.X contains non-integer values")
    assert "Traceback" not in err and err.count("\n") == 1


def test_training_into_an_existing_directory_fails_before_training(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    code = main(["train", "--data", str(tmp_path / "missing.h5ad"), "--out", str(tmp_path / "m")])
    assert "already exists; pass --overwrite" in _one_line(capsys, code)


def test_a_missing_data_file_is_one_line_with_exit_code_2(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "missing.h5ad"), "--out", str(tmp_path / "m")])
    assert "missing.h5ad does not exist" in _one_line(capsys, code)


def test_a_label_named_twice_is_a_clear_error(tmp_path, capsys):
    code = main(["generate", "--model", str(tmp_path), "--labels", "B=3,B=4", "--out", "o.h5ad"])
    assert "names 'B' twice" in _one_line(capsys, code)


# ----------------------------------------------- bad input files: one line, exit code 2
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny trained scVI generator saved once (the CLI's default --generator)."""
    import scvi
    import torch

    from scvi_gen.baselines import SCVIGenerator

    torch.set_num_threads(1)
    scvi.settings.seed = 0
    adata = make_counts_adata(n_cells=60, n_genes=12)
    SCVIGenerator.setup_anndata(adata, labels_key="cell_type")
    model = SCVIGenerator(adata, n_hidden=16, n_latent=4)
    model.train(max_epochs=1, enable_progress_bar=False)
    path = tmp_path_factory.mktemp("saved") / "model"
    model.save(path)
    return path


def _one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("scvi-gen: error: ")
    assert "Traceback" not in err and err.count("\n") == 1
    return err


def _copy_model(saved_model, tmp_path):
    import shutil

    shutil.copytree(saved_model, tmp_path / "model")
    return tmp_path / "model"


def test_a_file_that_is_not_h5ad_is_one_line(tmp_path, capsys):
    (tmp_path / "cells.h5ad").write_text("gene,cell\n1,2\n")
    code = main(["train", "--data", str(tmp_path / "cells.h5ad"), "--out", str(tmp_path / "m")])
    err = _one_line_error(capsys, code)
    assert "cells.h5ad is not a readable .h5ad file" in err


def test_truncated_weights_are_one_line(saved_model, tmp_path, capsys):
    model = _copy_model(saved_model, tmp_path)
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) // 2])
    code = main(["generate", "--model", str(model), "--out", str(tmp_path / "o.h5ad")])
    err = _one_line_error(capsys, code)
    assert "model.safetensors is not a readable weights file" in err


def test_pickle_payload_is_one_line_and_never_runs(saved_model, tmp_path, capsys):
    from pathlib import Path

    import torch

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    model = _copy_model(saved_model, tmp_path)
    (model / "model.safetensors").unlink()
    torch.save({"w": Payload()}, model / "model_state.pt")
    code = main(["generate", "--model", str(model), "--out", str(tmp_path / "o.h5ad")])
    err = _one_line_error(capsys, code)
    assert "model_state.pt holds more than tensors" in err
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------------- split
def _labelled(tmp_path, n_cells=200):
    adata = make_counts_adata(n_cells=n_cells, n_genes=10)
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    return adata, path


def test_split_writes_stratified_train_test_validation(tmp_path, capsys):
    adata, path = _labelled(tmp_path)
    argv = ["split", "--data", str(path), "--out-dir", str(tmp_path / "s"),
            "--labels-key", "cell_type", "--test-size", "0.25", "--validation-size", "0.15"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    parts = {
        n: ad.read_h5ad(tmp_path / "s" / f"{n}.h5ad") for n in ("train", "test", "validation")
    }
    assert out.count("Wrote ") == 3
    names = [set(p.obs_names) for p in parts.values()]
    assert sum(map(len, names)) == adata.n_obs
    assert set.union(*names) == set(adata.obs_names)
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    assert parts["test"].n_obs == 51  # 67/67/66 cells per label, 25 % of each rounded
    total = adata.obs["cell_type"].value_counts()
    for name, fraction in (("test", 0.25), ("validation", 0.15)):
        share = parts[name].obs["cell_type"].value_counts() / total
        np.testing.assert_allclose(share.to_numpy(), fraction, atol=0.02)
    # The same seed gives the same cells; another seed other cells.
    again = tmp_path / "again"
    main([*argv[:4], str(again), *argv[5:]])
    assert list(ad.read_h5ad(again / "test.h5ad").obs_names) == list(parts["test"].obs_names)
    main([*argv[:4], str(tmp_path / "seed1"), *argv[5:], "--seed", "1"])
    seed1 = ad.read_h5ad(tmp_path / "seed1" / "test.h5ad")
    assert set(seed1.obs_names) != set(parts["test"].obs_names)


def test_split_refuses_to_overwrite_and_bad_sizes(tmp_path, capsys):
    _, path = _labelled(tmp_path, n_cells=40)
    assert main(["split", "--data", str(path), "--out-dir", str(tmp_path)]) == 0
    assert not (tmp_path / "validation.h5ad").exists()
    capsys.readouterr()
    code = main(["split", "--data", str(path), "--out-dir", str(tmp_path)])
    assert "already exist; pass --overwrite" in _one_line(capsys, code)
    assert main(["split", "--data", str(path), "--out-dir", str(tmp_path), "--overwrite"]) == 0
    capsys.readouterr()
    code = main(["split", "--data", str(path), "--test-size", "0.5", "--validation-size", "0.6"])
    assert "--validation-size must be" in _one_line(capsys, code)


# ------------------------------------------------------ output: quiet by default, -q, -v
def _train_argv(tmp_path, *extra):
    adata = make_counts_adata(n_cells=60, n_genes=12)
    adata.write_h5ad(tmp_path / "train.h5ad")
    return ["train", "--data", str(tmp_path / "train.h5ad"), "--labels-key", "cell_type",
            "--max-epochs", "2", "--model-kwargs", '{"n_hidden": 8, "n_latent": 2}',
            "--out", str(tmp_path / "model"), "--overwrite", *extra]  # fmt: skip


def test_default_output_is_progress_on_stderr_and_results_on_stdout(tmp_path, capfd, one_thread):
    assert main(_train_argv(tmp_path, "--accelerator", "cpu", "--devices", "1")) == 0
    out, err = capfd.readouterr()
    assert out.strip().splitlines() == [
        f"Saved scvi model (60 training cells) to {tmp_path / 'model'}"
    ]
    assert "Training, epoch 2/2" in err
    for banner in ("GPU available", "TPU available", "Tip:", "Trainer.fit"):
        assert banner not in err


def test_quiet_has_no_progress_bar(tmp_path, capfd, one_thread):
    assert main(["-q", *_train_argv(tmp_path)]) == 0
    out, err = capfd.readouterr()
    assert "Saved scvi model" in out
    assert "Training" not in err


def test_verbose_logs_progress_messages(tmp_path, caplog, lightning_messages, one_thread):
    import logging

    caplog.set_level(logging.INFO)
    assert (
        main(["-v", *_train_argv(tmp_path, "--train-kwargs", '{"enable_progress_bar": false}')])
        == 0
    )
    text = caplog.text
    assert "Training scvi on 60 cells x 12 genes" in text
    assert "GPU available" in "\n".join(lightning_messages)  # Lightning's banner at -v


def test_generate_device_flags(saved_model, tmp_path, capsys):
    out = tmp_path / "o.h5ad"
    argv = ["generate", "--model", str(saved_model), "--n-cells", "5", "--out", str(out)]
    assert main([*argv, "--accelerator", "cpu"]) == 0
    assert ad.read_h5ad(out).n_obs == 5
    capsys.readouterr()
    code = main([*argv, "--accelerator", "gpu", "--devices", "0,1"])
    assert "generate runs on one device" in _one_line(capsys, code)
    code = main([*argv, "--devices", "1"])
    assert "--devices needs --accelerator gpu" in _one_line(capsys, code)
