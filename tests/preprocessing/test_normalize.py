from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from scvi_gen.preprocessing import TARGET_SUM, log1p_cp10k


def test_target_sum_is_cp10k() -> None:
    assert TARGET_SUM == 1e4


def test_known_row_normalises_to_known_values() -> None:
    # 1 and 3 of 4 counts are 2,500 and 7,500 of 10,000.
    out = log1p_cp10k(np.array([[1.0, 3.0, 0.0]]))
    np.testing.assert_allclose(out, [[np.log1p(2500.0), np.log1p(7500.0), 0.0]], rtol=1e-6)
    assert out.dtype == np.float32


def test_sparse_matches_dense_and_stays_sparse() -> None:
    counts = np.array([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0], [5.0, 0.0, 5.0]])
    dense = log1p_cp10k(counts)
    sparse = log1p_cp10k(sp.csr_matrix(counts))
    assert sp.issparse(sparse) and sparse.dtype == np.float32
    np.testing.assert_array_equal(sparse.toarray(), dense)
    # An empty cell has no composition: it stays 0, not NaN.
    np.testing.assert_array_equal(dense[1], 0.0)


def test_library_over_more_genes_than_the_block() -> None:
    # Library 10 (over all genes) for a block holding 2 of them: 2/10 and 3/10 of 10,000.
    out = log1p_cp10k(np.array([[2.0, 3.0]]), library=np.array([10.0]))
    np.testing.assert_allclose(out, [[np.log1p(2000.0), np.log1p(3000.0)]], rtol=1e-6)


def test_library_of_the_wrong_length_is_an_error() -> None:
    with pytest.raises(ValueError, match="2 values for 1 rows"):
        log1p_cp10k(np.ones((1, 2)), library=np.ones(2))
