"""N:M sparsity (lth/compression/nm.py): the bytes of an N:M leaf, which leaves count as N:M (groups
of M along the input axis, -2), and the compressed matmul against the masked dense one."""
import jax.numpy as jnp
import numpy as np
import pytest

from lth.compression import nm as NM
from lth.compression import quantize as Q
from lth.compression import sparse_exec
from lth.surgeons.layer import nm_keep


def nm_kernel(shape, n, m, seed=0):
    """Normal weights with the n largest |w| of every m consecutive inputs (axis -2) kept, the rest 0."""
    w = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return np.where(np.asarray(nm_keep(jnp.abs(jnp.asarray(w)), n, m)), w, 0.0).astype(np.float32)


def test_bytes_of_a_2_4_leaf_are_half_the_values_plus_2_bits_each():
    w = nm_kernel((64, 24), 2, 4)                       # 1536 entries, 768 kept
    assert NM.nm_pattern_of(w) == (2, 4) and NM.is_nm(w, 2, 4) and not NM.is_nm(w, 1, 4)
    assert NM.nm_bytes(w.size, 2, 4, 4) == 768 * 4 + 768 * 2 // 8 == 3264
    assert NM.nm_bytes(w.size, 2, 4, 1) == 768 + 192
    assert NM.nm_bytes(12, 2, 4, 1) == 6 + 2            # 6 kept × 2 bits = 12 bits: rounded up to 2 bytes
    assert NM.nm_bytes(w.size, 4, 8, 4) == 768 * 4 + 768 * 3 // 8          # 3-bit indices for M = 8
    # 2:4 ties with the bitmask (n/2 values + n/8 bytes either way): the tie goes to N:M
    assert Q.storage(w.size, 768, 4, (2, 4)) == {"bytes": 3264, "how": "n:m", "pattern": "2:4"}
    # 1:4 is strictly cheapest: n/4 values + n/16 bytes of indices < n/4 values + n/8 of bitmask
    assert Q.storage(1536, 384, 4, (1, 4)) == {"bytes": 384 * 4 + 96, "how": "n:m", "pattern": "1:4"}
    assert Q.storage(1536, 384, 4)["bytes"] == 384 * 4 + 192                 # bitmask without the pattern
    # 4:8 costs more than the bitmask (3 bits per kept value > 1 bit per entry over 2): not chosen
    assert Q.storage(1536, 768, 4, (4, 8)) == {"bytes": 768 * 4 + 192, "how": "bitmask"}
    # a 2:4 leaf with fewer than n/2 non-zeros: the bitmask (nnz values) wins
    assert Q.storage(1536, 700, 4, (2, 4)) == {"bytes": 700 * 4 + 192, "how": "bitmask"}


def test_sizes_count_an_nm_leaf_as_nm_and_model_bytes_estimates_int8():
    w = {"fc": {"kernel": nm_kernel((64, 24), 1, 4), "bias": np.ones(24, np.float32)},
         "head": {"kernel": nm_kernel((24, 10), 2, 4, seed=1)}}
    out = Q.model_bytes(w)                               # masks from the non-zeros, prunable '.*kernel'
    rows = {r["path"]: r for r in out["leaves"]}
    assert (rows["fc/kernel"]["nm"], rows["fc/kernel"]["locate"]) == ("1:4", "n:m")
    assert rows["fc/kernel"]["f32_bytes"] == 384 * 4 + 384 * 2 // 8
    assert rows["fc/kernel"]["int8_bytes"] == 384 + 96 + 4 * 24          # int8 values + 1 f32 scale per output
    assert rows["head/kernel"]["nm"] == "2:4" and rows["head/kernel"]["f32_bytes"] == 120 * 4 + 30
    assert rows["fc/bias"]["nm"] is None and rows["fc/bias"]["f32_bytes"] == rows["fc/bias"]["int8_bytes"] == 96
    assert out["dense_f32"] == 4 * (1536 + 24 + 240)
    assert out["sparse_f32"] == sum(r["f32_bytes"] for r in rows.values())
    # nm=None: the old formats only (the bitmask); a given pattern the leaf does not satisfy: not N:M
    assert {r["path"]: r["locate"] for r in Q.model_bytes(w, nm=None)["leaves"]}["fc/kernel"] == "bitmask"
    assert {r["path"]: r["nm"] for r in Q.model_bytes(w, nm=(2, 8))["leaves"]} == \
        {"fc/bias": None, "fc/kernel": "2:8", "head/kernel": None}


def test_a_group_with_n_plus_one_nonzeros_is_not_nm():
    w = nm_kernel((16, 8), 2, 4)
    w[4:8, 3] = [1.0, 2.0, 3.0, 0.0]                     # one group of 4 inputs with 3 non-zeros,
    w[8:12, 3] = [0.0, 0.0, 0.0, 4.0]                    # another with 1: half the entries non-zero still
    assert np.count_nonzero(w) == w.size // 2
    assert not NM.is_nm(w, 2, 4) and NM.nm_pattern_of(w) is None
    mask = w != 0
    row = Q.model_bytes({"k": {"kernel": w}}, {"k": {"kernel": mask}})["leaves"][0]
    assert row["nm"] is None and row["locate"] == "bitmask" and row["f32_bytes"] == 4 * int(mask.sum()) + 16
    with pytest.raises(ValueError, match="not 2:4"):
        NM.compress_nm(w, 2, 4)


def test_groups_run_along_the_input_axis():
    """A kernel that is 2:4 along its output axis (-1) but not along its input axis (-2) is not N:M;
    its transpose is. A convolution (kh, kw, in, out) groups its in axis."""
    w = nm_kernel((8, 16), 2, 4).T                       # (16, 8): 2:4 along axis -1
    assert NM.is_nm(w.T, 2, 4) and not NM.is_nm(w, 2, 4) and NM.nm_pattern_of(w) is None
    conv = nm_kernel((3, 3, 8, 4), 2, 4)
    assert NM.nm_pattern_of(conv) == (2, 4) and not NM.is_nm(np.swapaxes(conv, -1, -2), 2, 4)
    assert NM.nm_pattern_of(np.ones(12)) is None and NM.nm_pattern_of(np.zeros((6, 4))) is None   # 1-D; 4 ∤ 6


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4)])
def test_nm_matmul_equals_the_masked_dense_product(n, m):
    rng = np.random.default_rng(n * m)
    w = rng.normal(size=(32, 12)).astype(np.float32)
    mask = np.array(nm_keep(jnp.abs(jnp.asarray(w)), n, m))
    mask[0:m, 0] = False                                  # a group with fewer than n non-zeros: zeros in its slots
    values, indices = NM.compress_nm(w, n, m, mask)
    assert values.shape == indices.shape == (32 * n // m, 12) and indices.dtype == jnp.uint8
    assert int(indices.max()) < m and np.all(np.diff(np.asarray(indices).reshape(-1, n, 12), axis=1) > 0)
    x = rng.normal(size=(5, 32)).astype(np.float32)
    ref = x @ (w * mask)
    for form in sparse_exec.NM_FORMS:
        np.testing.assert_allclose(np.asarray(NM.nm_matmul(jnp.asarray(x), values, indices, n, m, form)), ref,
                                   rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(NM.nm_densify(values, indices, n, m)), w * mask)


@pytest.mark.slow
def test_nm_speed_rows_tiny():
    r = sparse_exec.nm_speed(shapes=((12, 8),), batches=(1,), repeats=2)     # 8 ∤ 12: no 4:8 row
    assert [(row["shape"], row["pattern"]) for row in r["rows"]] == [([12, 8], "2:4")]
    row = r["rows"][0]
    assert row["dense_ms"] > 0 and row["masked_ms"] > 0 and row["nm_ms"] == min(row["form_ms"].values())
    assert row["form"] in sparse_exec.NM_FORMS and row["ratio"] == row["nm_ms"] / row["dense_ms"]
    assert row["nm_bytes"] == 48 * 4 + 12 and row["dense_bytes"] == 384
    assert "\n| 2:4 | 12×8 | 1 |" in sparse_exec.nm_table(r["rows"])
