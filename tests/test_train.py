"""The masked train step: pruned weights stay exactly 0, schedules, vmapped replicates."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth.harness.config import base
from lth.harness.trainer import trainer_from_config
from lth.models import zoo
from lth.pruning import masks as M
from lth.pruning import prune as P
from lth.training.optim import make_schedule


def train_cfg(**kw):
    t = base().train
    t.update(dict(batch_size=32, duration="30it", eval_batch_size=64), **kw)
    return t


def make(opt, n=256, **kw):
    model = zoo.build("lenet_32_16", 10, "kaiming_normal", (20,))
    t = trainer_from_config(model, train_cfg(optimizer=opt, **kw), n)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n, 20)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, n), jnp.int32)
    return t, x, y


def start_state(t, seeds, sparsity=0.5):
    params, ms = [], []
    for s in seeds:
        p, m = t.init_variables(jax.random.PRNGKey(s), jnp.zeros((1, 20)))
        params.append(p), ms.append(m)
    params, ms = M.stack(params), M.stack(ms)
    prunable = M.prunable_tree(M.index(params, 0), r".*kernel")
    scores = M.stack([jax.tree.map(lambda p, s=s: jax.random.uniform(jax.random.PRNGKey(s), p.shape),
                                   M.index(params, 0))
                      for s in seeds])
    masks = P.prune_replicates(scores, M.ones_like(params), prunable, fraction=sparsity)
    keys = lambda purpose: jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), purpose) for s in seeds])  # noqa: E731
    return t.new_state(params, ms, masks, 0, keys(1), keys(2))


@pytest.mark.parametrize("opt,kw", [("sgd", dict(momentum=0.9, weight_decay=5e-3, lr=0.1)),
                                    ("adam", dict(weight_decay=1e-3, lr=1e-2)),
                                    ("adamw", dict(weight_decay=0.1, lr=1e-2))])
def test_pruned_weights_exactly_zero_after_steps(opt, kw):
    t, x, y = make(opt, **kw)
    st = start_state(t, [0])
    before = st.params
    perm = t.epoch_perm(st.data_rng, 0)
    st, loss = t.run_steps(st, perm, x, y, 7)
    assert int(st.step[0]) == 7 and np.isfinite(np.asarray(loss)).all()
    for p, m, p0 in zip(jax.tree.leaves(st.params), jax.tree.leaves(st.masks), jax.tree.leaves(before)):
        p, m = np.asarray(p), np.asarray(m)
        assert np.all(p[~m] == 0.0)
        if m.all() or m.sum() > 0:
            assert not np.array_equal(p[m], np.asarray(p0)[m])  # live weights did move
    # optimizer state (momentum / Adam moments) of pruned weights stays 0 too
    for leaf in jax.tree.leaves(st.opt_state):
        if leaf.shape == st.params["fc_0"]["kernel"].shape:
            assert np.all(np.asarray(leaf)[~np.asarray(st.masks["fc_0"]["kernel"])] == 0)


def test_vmapped_replicates_equal_one_by_one():
    t, x, y = make("sgd", momentum=0.9, lr=0.05)
    both = start_state(t, [3, 4])
    perm = t.epoch_perm(both.data_rng, 0)
    both, _ = t.run_steps(both, perm, x, y, 8)
    for r, seed in enumerate([3, 4]):
        one = start_state(t, [seed])
        one, _ = t.run_steps(one, t.epoch_perm(one.data_rng, 0), x, y, 8)
        for a, b in zip(jax.tree.leaves(M.index(both.params, r)), jax.tree.leaves(M.index(one.params, 0))):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_sequential_replicates_equal_vmapped():
    """replicate_mode 'sequential' (each replicate's own compiled step in turn) trains and evaluates
    exactly what the vmapped program does."""
    import dataclasses
    t, x, y = make("sgd", momentum=0.9, lr=0.05)
    seq = dataclasses.replace(t, replicate_mode="sequential")
    out = []
    for tr in (t, seq):
        st = start_state(tr, [3, 4])
        st, losses = tr.run_steps(st, tr.epoch_perm(st.data_rng, 0), x, y, 5)
        split = tr.chunked(np.asarray(x), np.asarray(y), 64)
        out.append((st, np.asarray(losses), [np.asarray(v) for v in tr.evaluate(st, split)]))
    (a, la, ea), (b, lb, eb) = out
    assert la.shape == lb.shape == (5, 2)
    np.testing.assert_allclose(la, lb, rtol=1e-6)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-5, atol=1e-6)
    for u, v in zip(ea, eb):
        np.testing.assert_allclose(u, v, rtol=1e-6)


@pytest.mark.slow
def test_distillation_alpha_one_is_plain_training_and_self_teacher_has_zero_gradient():
    """α = 1: the distilled step equals the plain step bit for bit. A teacher equal to the student at
    α = 0, T = 1: zero gradient at the teacher's weights (KL(p ‖ p) is flat there)."""
    import dataclasses

    from lth.training import distill
    t, x, y = make("sgd", momentum=0.9, lr=0.05)
    st = start_state(t, [5, 6])
    other = start_state(t, [7, 8])
    teacher_vars = {"params": other.params}
    apply = lambda v, xb: t.model.apply(v, xb)  # noqa: E731
    kd = dataclasses.replace(t, teacher=apply, distill_alpha=1.0, distill_temperature=4.0)
    perm = t.epoch_perm(st.data_rng, 0)
    plain, lp = t.run_steps(st, perm, x, y, 4)
    dist, ld = kd.run_steps(st, perm, x, y, 4, teacher=teacher_vars)
    np.testing.assert_array_equal(np.asarray(lp), np.asarray(ld))
    for u, v in zip(jax.tree.leaves(plain.params), jax.tree.leaves(dist.params)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    # the loss itself: α = 0, T = 1, teacher = student → zero gradient; another teacher → not zero
    p0 = M.index(st.params, 0)
    xb, yb = x[:32], y[:32]

    def g(teacher_params, alpha=0.0, temp=1.0):
        target = apply({"params": teacher_params}, xb)
        grads = jax.grad(lambda p: distill.loss(apply({"params": p}, xb), target, yb, alpha, temp))(p0)
        return max(float(jnp.max(jnp.abs(l))) for l in jax.tree.leaves(grads))
    assert g(p0) < 1e-6
    assert g(M.index(other.params, 0)) > 1e-3
    assert g(p0, alpha=0.5) > 1e-3          # the label term still pulls
    with pytest.raises(ValueError, match="teacher variables"):
        kd.run_steps(st, perm, x, y, 1)


def test_distillation_loss_equals_hand_computation():
    """lth.distill.loss = mean over the batch of α·CE(y, student) + (1 − α)·T²·KL(softmax(teacher/T) ‖
    softmax(student/T)), computed here in float64 numpy for several α ∉ {0, 1} and T ≠ 1."""
    from lth.training import distill
    rng = np.random.default_rng(3)
    student = rng.normal(size=(6, 5)) * 2
    teacher = rng.normal(size=(6, 5)) * 2
    y = rng.integers(0, 5, 6)

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    loss = jax.jit(distill.loss)   # one compilation for every (α, T)
    for alpha, t in ((0.3, 2.5), (0.8, 0.5), (0.5, 4.0)):
        ce = -log_softmax(student)[np.arange(6), y].mean()
        log_p, log_q = log_softmax(teacher / t), log_softmax(student / t)   # p: teacher's, q: student's
        kl = (np.exp(log_p) * (log_p - log_q)).sum(-1).mean()
        want = alpha * ce + (1 - alpha) * t * t * kl
        got = float(loss(jnp.asarray(student, jnp.float32), jnp.asarray(teacher, jnp.float32),
                         jnp.asarray(y, jnp.int32), alpha, t))
        np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=f"alpha={alpha} T={t}")


def test_schedules():
    cfg = train_cfg(schedule="step", lr=0.1, milestones="2ep,3ep", gamma=0.1)
    f = make_schedule(cfg, total=40, milestones=[20, 30])
    np.testing.assert_allclose([float(f(s)) for s in (0, 19, 20, 29, 30, 39)], [0.1, 0.1, 0.01, 0.01, 0.001, 0.001],
                               rtol=1e-6)
    f = make_schedule(train_cfg(schedule="constant", lr=0.2), 40, warmup=4)
    np.testing.assert_allclose([float(f(s)) for s in (0, 3, 4, 30)], [0.05, 0.2, 0.2, 0.2], rtol=1e-6)
    f = make_schedule(train_cfg(schedule="linear", lr=1.0), 40)
    assert float(f(0)) == 1.0 and abs(float(f(20)) - 0.5) < 1e-6


def test_eval_counts_every_example_once():
    t, x, y = make("sgd")
    st = start_state(t, [0])
    xs = np.asarray(x[:100])
    split = t.chunked(xs, np.asarray(y[:100]))  # 100 examples in chunks of 64: padding must not count
    loss, acc = t.evaluate(st, split)
    logits = t.model.apply({"params": M.index(st.params, 0)}, jnp.asarray(xs))
    np.testing.assert_allclose(float(acc[0]), float(np.mean(np.argmax(logits, -1) == np.asarray(y[:100]))), atol=1e-6)


def test_bad_optimizer_and_batch():
    from lth.errors import UserError

    with pytest.raises(UserError, match="optimizer 'rmsprop'"):
        make("rmsprop")
    with pytest.raises(UserError, match="batch_size 999"):
        trainer_from_config(zoo.build("lenet_4", 10, "kaiming_normal", (20,)), train_cfg(batch_size=999), 256)
