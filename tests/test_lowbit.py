"""Low-bit weights and Q-BERT's Hessian-aware allocation (lth/compression/lowbit.py): the power
iteration's eigenvalue equals the explicit Hessian's, the allocation gives the most bits to the
largest Ω, qwix's int4 / int2 kernels with per-group scales keep pruned weights at 0 and are counted
in bytes exactly (`lth compress`'s low-bit and mixed stages: tests/test_compress.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lth.compression import lowbit as LB
from lth.compression import quantize as Q
from lth.errors import UserError


def mlp_loss(w1, w2, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(jnp.tanh(x @ w1) @ w2, y).mean()


def test_power_iteration_finds_the_hessians_top_eigenvalue():
    """λ from Hessian-vector products equals the eigenvalue of largest magnitude of the explicit
    Hessian of the loss in one layer's weights (the others fixed)."""
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    w1, w2 = jax.random.normal(k[0], (5, 4)), jax.random.normal(k[1], (4, 3))
    x, y = jax.random.normal(k[2], (16, 5)), jax.random.randint(k[3], (16,), 0, 3)
    f = lambda w: mlp_loss(w, w2, x, y)  # noqa: E731
    h = jax.hessian(lambda v: f(v.reshape(5, 4)))(w1.ravel())
    ev = np.linalg.eigvalsh(np.asarray(h, np.float64))
    top = ev[np.argmax(np.abs(ev))]
    lam = LB.top_eigenvalue(f, w1, jax.random.PRNGKey(1), iters=2000, tol=1e-7)
    assert lam == pytest.approx(top, rel=1e-3)
    # the Gauss-Newton / Fisher-like outer product of gradients is not the Hessian
    g = jax.vmap(jax.grad(lambda w, xi, yi: mlp_loss(w, w2, xi[None], yi[None])), (None, 0, 0))(w1, x, y)
    fisher = np.einsum("ni,nj->ij", g.reshape(16, -1), g.reshape(16, -1)) / 16
    assert np.max(np.linalg.eigvalsh(fisher)) != pytest.approx(top, rel=1e-2)


def test_allocation_gives_the_most_bits_to_the_largest_sensitivity():
    omegas = {"a": 0.1, "b": 5.0, "c": 2.0, "d": 0.5, "e": 3.0}
    assert LB.allocate(omegas, [2, 8, 4]) == {"b": 8, "e": 8, "c": 4, "d": 4, "a": 2}
    assert LB.allocate(omegas, [4]) == dict.fromkeys(omegas, 4)
    assert LB.mean_bits({"a": 8, "b": 2}, {"a": 100, "b": 300}) == pytest.approx(3.5)
    with pytest.raises(UserError, match=r"compress.low_bits entry '3'"):
        LB.parse_bits("4,3", "compress.low_bits")


@pytest.mark.parametrize("bits,group", [(4, 16), (2, 8), (8, 0)])
def test_low_bit_kernels_keep_zeros_and_are_counted_exactly(bits, group):
    import qwix

    from lth.models.inits import Init
    from lth.models.lenet import MLP
    model = MLP((32, 16), 10, Init("kaiming_normal"))
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 48))
    params = model.init(jax.random.PRNGKey(1), x)["params"]
    mask = {k: {"kernel": jax.random.bernoulli(jax.random.PRNGKey(i), 0.3, v["kernel"].shape), "bias": True}
            for i, (k, v) in enumerate(params.items())}
    params = {k: {"kernel": v["kernel"] * mask[k]["kernel"], "bias": v["bias"]} for k, v in params.items()}
    rules = [qwix.QtRule(module_path=".*", weight_qtype=LB.qtype(bits), tile_size=group or None)]
    ptq = qwix.quantize_model(model, qwix.PtqProvider(rules))
    abstract = jax.eval_shape(lambda: ptq.init(jax.random.PRNGKey(0), x))["params"]
    q = Q.quantized_leaves(qwix.quantize_params(params, abstract, {}, allow_extra_params=True))
    assert sorted(q) == sorted(f"{k}/kernel" for k in params)
    masks = {k: {"kernel": np.asarray(mask[k]["kernel"]), "bias": np.ones(v["bias"].shape, bool)}
             for k, v in params.items()}
    prunable = {k: {"kernel": True, "bias": False} for k in params}
    out = Q.sizes(params, masks, prunable, q)
    for path, leaf in q.items():
        k = path.split("/")[0]
        m = masks[k]["kernel"]
        assert not np.any(np.asarray(leaf.qvalue)[~m])          # a pruned weight stays exactly 0
        assert LB.bits_of(leaf.qvalue.dtype) == bits
        n_in, n_out = m.shape
        groups = n_in // group if group else 1
        assert np.size(leaf.scale) == groups * n_out
        row = next(r for r in out["leaves"] if r["path"] == path)
        n, nnz = m.size, int(m.sum())
        values = {"dense": n * bits / 8, "bitmask": nnz * bits / 8 + np.ceil(n / 8),
                  "indices": nnz * (bits / 8 + 2)}
        assert row["int8_bytes"] == int(np.ceil(min(values.values()))) + 4 * groups * n_out

