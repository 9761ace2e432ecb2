from __future__ import annotations

import anndata as ad
import pytest

from scvi_gen.cli import build_parser, main
from tests.conftest import make_counts_adata


@pytest.mark.parametrize("command", ["demo", "train", "generate", "evaluate"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: scvi-gen " + command in capsys.readouterr().out


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


def test_bad_labels_argument_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="NAME=COUNT"):
        main(["generate", "--model", str(tmp_path), "--labels", "B=x", "--out", "o.h5ad"])


def test_bad_data_is_one_line_on_stderr(tmp_path, capsys):
    adata = make_counts_adata(n_cells=20, n_genes=10)
    adata.X = adata.X / 2.0  # not counts
    adata.write_h5ad(tmp_path / "half.h5ad")
    code = main(["train", "--data", str(tmp_path / "half.h5ad"), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("scvi-gen: error: adata.X contains non-integer values")
    assert "Traceback" not in err and err.count("\n") == 1


def test_training_into_an_existing_directory_fails_before_training(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(SystemExit, match="already exists; pass --overwrite"):
        main(["train", "--data", str(tmp_path / "missing.h5ad"), "--out", str(tmp_path / "m")])


def test_a_label_named_twice_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="names 'B' twice"):
        main(["generate", "--model", str(tmp_path), "--labels", "B=3,B=4", "--out", "o.h5ad"])


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
