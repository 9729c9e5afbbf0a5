"""IMP rewinding on a conv net with BatchNorm and a step schedule, against a hand computation.

Level 1 must start at step k from (level 0's weights at k) ⊙ mask, with level 0's BatchNorm running
statistics at k, a fresh optimizer (momentum buffers zero), the learning rate of step k and the data
order of step k; its first step is then computed here by hand (gradient of the mean cross-entropy on
the batch the documented data-order rule gives, BatchNorm in train mode, masked, plus L2 weight decay,
times lr(k), one fresh momentum buffer; running statistics 0.9 · old + 0.1 · batch, unbiased
variance) — not by calling the training code again.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from conftest import tiny_config

from lth import data as D
from lth.harness import run as harness
from lth.harness.rundir import open_run_dir
from lth.models.inits import Init
from lth.models.layers import Conv, batch_norm, conv, dense
from lth.models.zoo import Family
from lth.registry import MODELS
from lth.studies import lottery

N, B, K = 32, 8, 6            # 32 training images, batches of 8: 4 steps per epoch; rewind to step 6
LR, GAMMA, WD, MOM = 0.05, 0.1, 0.01, 0.9
MILESTONE = 4                 # '1ep': lr(k) = LR · GAMMA, lr(0) = LR
SEED = 0


def fake_cifar(cfg):
    """Tiny random 8×8 RGB images in place of CIFAR-10 (no files)."""
    rng = np.random.default_rng(1)
    x = lambda n: rng.normal(size=(n, 8, 8, 3)).astype(np.float32)  # noqa: E731
    y = lambda n: rng.integers(0, 10, n).astype(np.int32)  # noqa: E731
    return D.Dataset("cifar10", x(N), y(N), x(8), y(8), x(8), y(8), 10)


class TinyBNNet(nn.Module):
    """conv → BatchNorm → ReLU → spatial mean → linear: a VGG block. (A full VGG-11 would do, but
    XLA:CPU takes seconds to compile each 4-D kernel's random init.)"""

    num_classes: int
    inits: Init

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(batch_norm(conv(x, 8, 3, self.inits, "conv_0"), self.inits, train, "bn_0"))
        return dense(jnp.mean(x, axis=(1, 2)), self.num_classes, self.inits, "out", out=True)


TINY_FAMILY = Family({
    "tiny_bn_cnn": (lambda m, classes, init, shape, width: TinyBNNet(classes, init), "test conv net with BatchNorm")})


def config():
    return tiny_config(
        "data.name=cifar10", "model.name=tiny_bn_cnn", "model.conv_impl=xla",
        f"train.batch_size={B}", "train.duration=8it", "train.eval_every=8it", "train.eval_batch_size=8",
        "train.optimizer=sgd", f"train.lr={LR}", f"train.momentum={MOM}", f"train.weight_decay={WD}",
        "train.schedule=step", "train.milestones=1ep", f"train.gamma={GAMMA}", "data.augment=none",
        "lottery.levels=1", f"lottery.rewind={K}it", "lottery.controls=", "run.checkpoint_every=0it",
        f"seed={SEED}", "replicates=1")


def run_imp(path, mp):
    """Levels 0 and 1; the states every arm starts from, and each arm's states at steps k and k + 1."""
    mp.setattr(D, "load", fake_cifar)
    MODELS.names()   # the built-in families first
    mp.setitem(MODELS._entries, "tiny", TINY_FAMILY)
    cfg = config()
    s = lottery.setup(cfg)
    open_run_dir(str(path), cfg, lottery.COMMAND)
    starts, at = [], {}
    real = harness.fit

    def recording(trainer, state, *a, captures=None, **kw):
        arm = len(starts)
        starts.append(state)
        caps = dict(captures or {})
        for step in (K, K + 1):
            inner = caps.get(step)

            def grab(st, step=step, inner=inner):
                at[arm, step] = st
                if inner is not None:
                    inner(st)
            caps[step] = grab
        return real(trainer, state, *a, captures=caps, **kw)
    mp.setattr(harness, "fit", recording)
    lottery.run(s, str(path), log=lambda *_: None)
    return s, starts, at


def one(tree):
    return jax.tree.map(lambda a: np.asarray(a)[0], tree)


def conv_outputs(model, params, stats, x):
    """Each conv's output in train mode (the input of the BatchNorm after it)."""
    _, out = model.apply({"params": params, **stats}, x, train=True, mutable=["batch_stats", "intermediates"],
                         capture_intermediates=lambda mdl, _: isinstance(mdl, Conv))
    return {name: v["__call__"][0] for name, v in out["intermediates"].items()}


def hand_running_stats(model, params, stats, x):
    """PyTorch's update: 0.9 · old + 0.1 · batch mean / unbiased batch variance, per BatchNorm."""
    convs = jax.jit(conv_outputs, static_argnums=0)(model, params, stats, x)
    new = {}
    for name, y in convs.items():
        bn = "bn_" + name.split("_")[1]
        old = stats["batch_stats"][bn]
        y = np.asarray(y, np.float64).reshape(-1, y.shape[-1])
        n = y.shape[0]
        new[bn] = {"mean": 0.9 * np.asarray(old["mean"]) + 0.1 * y.mean(0),
                   "var": 0.9 * np.asarray(old["var"]) + 0.1 * y.var(0) * n / (n - 1)}
    assert set(new) == set(stats["batch_stats"])
    return {"batch_stats": new}


def batch_at(step, data_key):
    """Indices of the batch of global step `step`: epoch e is permutation(fold_in(data_key, e)),
    and step s takes its (s mod steps-per-epoch)-th slice of B."""
    spe = N // B
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(data_key, step // spe), N))
    return perm[(step % spe) * B:(step % spe + 1) * B]


def assert_trees_close(got, want, rtol, atol, what):
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol,
                                   err_msg=f"{what} {jax.tree_util.keystr(path)}")


def test_rewind_with_batchnorm_and_step_schedule(tmp_path, monkeypatch):
    """One test (one IMP run, which costs most of its time, also under pytest-xdist)."""
    s, starts, at = run_imp(tmp_path, monkeypatch)
    check_start(starts, at)
    check_first_step(s, at)


def check_start(starts, at):
    """(a) level 1 at its start: step k, (level 0's weights at k) ⊙ mask, level 0's BatchNorm
    statistics at k, zero optimizer slots, the run's data key."""
    level0_k, level1 = at[0, K], starts[1]
    assert int(level0_k.step[0]) == K and int(level1.step[0]) == K
    masks = one(level1.masks)
    assert not all(m.all() for m in jax.tree.leaves(masks))    # something was pruned
    # weights: level 0's at step k, times the mask, exactly
    want = jax.tree.map(lambda p, m: np.where(m, p, 0), one(level0_k.params), masks)
    for g, w in zip(jax.tree.leaves(one(level1.params)), jax.tree.leaves(want)):
        np.testing.assert_array_equal(g, w)
    # BatchNorm running statistics: level 0's at step k (which differ from those at init)
    init_stats = one(starts[0].model_state)
    for g, w, i in zip(jax.tree.leaves(one(level1.model_state)), jax.tree.leaves(one(level0_k.model_state)),
                       jax.tree.leaves(init_stats)):
        np.testing.assert_array_equal(g, w, err_msg="BatchNorm statistics are not those of step k")
    assert any(not np.allclose(w, i) for w, i in zip(jax.tree.leaves(one(level0_k.model_state)),
                                                     jax.tree.leaves(init_stats)))
    # a fresh optimizer: every slot zero (level 0's momentum at k is not)
    assert any(np.any(np.asarray(leaf) != 0) for leaf in jax.tree.leaves(level0_k.opt_state))
    stale = [jax.tree_util.keystr(path) for path, leaf in jax.tree_util.tree_leaves_with_path(level1.opt_state)
             if np.any(np.asarray(leaf) != 0)]
    assert not stale, f"level 1's optimizer state is not fresh: nonzero slots {stale}"
    # the data order of the run's own data key: fold_in(fold_in(PRNGKey(seed), 2 = 'data'), 0)
    data_key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(SEED), 2), 0)
    np.testing.assert_array_equal(np.asarray(level1.data_rng[0]), np.asarray(data_key))


def check_first_step(s, at):
    """(b) level 0's statistics after step k, and level 1's weights and statistics after its first
    step, from the batch of step k, by hand."""
    model = s.trainer.model
    x_all, y_all = np.asarray(s.dataset.x_train), np.asarray(s.dataset.y_train)
    data_key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(SEED), 2), 0)
    idx = batch_at(K, data_key)
    assert K % (N // B) != 0 and K // (N // B) != 0      # step k is mid-epoch, not in epoch 0
    x, y = jnp.asarray(x_all[idx]), jnp.asarray(y_all[idx])

    # level 0 took this batch at step k: its running statistics at k + 1 follow from it
    l0k, l0k1 = at[0, K], at[0, K + 1]
    want = hand_running_stats(model, one(l0k.params), one(l0k.model_state), x)
    assert_trees_close(one(l0k1.model_state), want, 1e-4, 1e-6, "level 0's BatchNorm statistics after step k")

    # level 1's first step, by hand from level 0's weights and statistics at k and level 1's mask
    after = at[1, K + 1]
    assert int(after.step[0]) == K + 1
    masks = one(after.masks)
    p = jax.tree.map(lambda w, m: np.where(m, w, 0), one(l0k.params), masks)
    stats = one(l0k.model_state)

    def ce(params):
        logits, _ = model.apply({"params": params, **stats}, x, train=True, mutable=["batch_stats"])
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))
    grads = jax.jit(jax.grad(ce))(p)
    lr_k = LR * GAMMA ** (K >= MILESTONE)        # the step schedule at k (one milestone passed)
    assert lr_k != LR
    # SGD as PyTorch: d = g ⊙ m + wd · p; a fresh momentum buffer is d itself; p ← (p − lr · d) ⊙ m
    want = jax.tree.map(lambda w, g, m: np.where(m, np.asarray(w) - lr_k * (np.where(m, g, 0) + WD * np.asarray(w)), 0),
                        p, grads, masks)
    step = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), want, p)
    scale = max(float(np.abs(d).max()) for d in jax.tree.leaves(step))
    assert scale > 1e-4
    for (path, got), p0, d in zip(jax.tree_util.tree_leaves_with_path(one(after.params)), jax.tree.leaves(p),
                                  jax.tree.leaves(step)):
        # the update itself, to 1e-4 of the largest update (it agrees to float32 rounding; a missing weight
        # decay is off by ~1e-2 of it, a wrong lr, batch or momentum buffer by more)
        np.testing.assert_allclose(np.asarray(got) - np.asarray(p0), d, rtol=0, atol=1e-4 * scale,
                                   err_msg=f"level 1's update at step k {jax.tree_util.keystr(path)}")
    assert_trees_close(one(after.model_state), hand_running_stats(model, p, stats, x), 1e-4, 1e-6,
                       "level 1's BatchNorm statistics after step k")
