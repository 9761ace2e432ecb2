from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from scvi_gen.baselines.sdv import CTGANGenerator, GaussianCopulaGenerator, TVAEGenerator
from tests.conftest import make_counts_adata

# Tiny settings: 4 components, 2 epochs; Gaussian marginals fit instantly. CTGAN models 20
# HVGs of the 30 genes, the others all genes.
MODELS = {
    "copula": (GaussianCopulaGenerator, {"default_distribution": "norm"}, {}),
    "ctgan": (
        CTGANGenerator,
        {"n_top_genes": 20, "embedding_dim": 8, "generator_dim": (16,)},
        {"max_epochs": 2},
    ),
    "tvae": (
        TVAEGenerator,
        {"embedding_dim": 8, "compress_dims": (16,), "decompress_dims": (16,)},
        {"max_epochs": 2},
    ),
}
PLAN = {"type0": 12, "type2": 5}


@pytest.fixture(scope="module", params=list(MODELS))
def trained(request):
    model_cls, init_kwargs, train_kwargs = MODELS[request.param]
    adata = make_counts_adata(n_cells=90, n_genes=30)
    model_cls.setup_anndata(adata, labels_key="cell_type")
    model = model_cls(adata, **{"n_top_genes": None, "n_components": 4, **init_kwargs})
    model.train(progress_bar=False, **train_kwargs)
    return adata, model


def test_generate_is_lognorm_non_negative_on_training_genes(trained):
    adata, model = trained
    syn = model.generate(labels=PLAN, seed=0)
    n_genes = model.init_params_["non_kwargs"]["n_top_genes"] or adata.n_vars
    assert syn.n_vars == n_genes
    assert list(syn.var_names) == [g for g in adata.var_names if g in set(syn.var_names)]
    counts = syn.obs["cell_type"].value_counts()
    assert counts[counts > 0].to_dict() == PLAN
    assert syn.X.min() >= 0
    assert syn.uns["scvi_gen"]["output"] == "log1p_cp10k"
    assert np.abs(syn.X.toarray()).sum() > 0


def test_save_load_round_trip_gives_identical_cells(trained, tmp_path):
    _, model = trained
    model.save(tmp_path / "model")
    loaded = type(model).load(tmp_path / "model")
    a = model.generate(labels=PLAN, seed=3)
    b = loaded.generate(labels=PLAN, seed=3)
    assert (a.X != b.X).nnz == 0
    assert list(a.var_names) == list(b.var_names)


def test_saved_model_holds_no_pickle(trained, tmp_path):
    _, model = trained
    model.save(tmp_path / "model")
    from safetensors.torch import load_file

    state = load_file(tmp_path / "model" / "model.safetensors")
    assert all(torch.is_tensor(v) for v in state.values())


def test_label_without_training_cells_is_a_clear_error():
    adata = make_counts_adata(n_cells=60, n_genes=20)
    adata.obs["cell_type"] = adata.obs["cell_type"].cat.add_categories(["ghost"])
    GaussianCopulaGenerator.setup_anndata(adata, labels_key="cell_type")
    model = GaussianCopulaGenerator(
        adata, n_top_genes=None, n_components=3, default_distribution="norm"
    )
    model.train(progress_bar=False)
    with pytest.raises(ValueError, match="No synthesizer was fitted for label 'ghost'"):
        model.generate(labels={"ghost": 3}, seed=0)


def test_mode_inversion_matches_ctgan_data_transformer():
    """Our tensor inversion equals ctgan's DataTransformer.inverse_transform."""
    from ctgan.data_transformer import DataTransformer

    from scvi_gen.baselines.sdv._ctgan import CTGANModule
    from scvi_gen.baselines.sdv._module import mixture_modes

    rng = np.random.default_rng(0)
    data = pd.DataFrame(
        np.concatenate([rng.normal(-3, 1, (30, 2)), rng.normal(4, 0.5, (30, 2))]),
        columns=["pc_0", "pc_1"],
    )
    transformer = DataTransformer()
    transformer.fit(data)
    encoded = transformer.transform(data)  # alpha and one-hot mode per column
    module = CTGANModule(n_labels=1, embedding_dim=2, hidden_dims=(4,))
    module.set_representation(np.arange(2), np.eye(2), np.zeros(2))
    module.set_bounds(0, data.to_numpy(), enforce=False)
    means, stds = mixture_modes(transformer)
    module.set_label_state(0, torch.nn.Identity(), means, stds)
    spans = module.spans(0)
    alpha = torch.as_tensor(np.stack([encoded[:, s] for s, _ in spans], 1))
    modes = torch.as_tensor(
        np.stack([encoded[:, s + 1 : s + 1 + m].argmax(1) for s, m in spans], 1)
    )
    ours = module.invert(0, alpha.float(), modes).numpy()
    theirs = transformer.inverse_transform(encoded).to_numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours, data.to_numpy(), rtol=1e-3, atol=1e-3)


def test_sdv_is_never_imported_at_module_level():
    """Importing scvi_gen must work without the optional extra (a fresh interpreter costs
    ~30 s on a busy machine, so the module-level imports are checked statically)."""
    import scvi_gen

    optional = {"sdv", "ctgan", "copulas", "rdt"}
    package = Path(scvi_gen.__file__).parent
    offenders = []
    for path in package.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in optional]
    assert not offenders
