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
