"""pl.interpolation draws the path and one trend line per gene, scanpy style."""

from __future__ import annotations

import matplotlib as mpl

mpl.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from scvi_gen import pl
from scvi_gen.base import embed_interpolation
from tests.base.test_interpolation_embedding import _path_from, _reference


@pytest.fixture(scope="module")
def embedded():
    reference = _reference()
    path = _path_from(reference, [0, 1, 90, 91, 170, 171])
    path.obs["t"] = np.repeat([0.0, 0.5, 1.0], 2)  # two cells per step
    return embed_interpolation(path, reference, basis="pca")


def test_return_fig_gives_two_panels_with_a_line_per_gene(embedded):
    fig = pl.interpolation(*embedded, genes=["g0", "g15"], color="cluster", return_fig=True)
    embedding_ax, trends_ax = fig.axes[:2]
    assert len(trends_ax.get_lines()) == 2
    np.testing.assert_allclose(trends_ax.get_lines()[0].get_xdata(), [0.0, 0.5, 1.0])
    assert embedding_ax.get_xlabel() == "PC 1"
    plt.close(fig)


def test_trend_line_is_the_mean_of_each_steps_cells(embedded):
    path_emb, _ = embedded
    fig = pl.interpolation(*embedded, genes=["g0"], return_fig=True)
    values = path_emb[:, "g0"].X.toarray().ravel()
    np.testing.assert_allclose(
        fig.axes[1].get_lines()[0].get_ydata(), values.reshape(3, 2).mean(1)
    )
    plt.close(fig)


def test_given_axes_are_drawn_into_and_returned(embedded):
    fig, axes = plt.subplots(1, 2)
    returned = pl.interpolation(*embedded, genes=["g0"], ax=axes, show=False)
    assert returned == list(axes) and len(axes[1].get_lines()) == 1
    plt.close(fig)


def test_unknown_gene_is_refused(embedded):
    with pytest.raises(ValueError, match=r"\['ISG15'\] are not genes of the path"):
        pl.interpolation(*embedded, genes=["ISG15"], show=False)
