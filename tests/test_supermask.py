"""Edge-popup supermasks (lth/pruning/supermask.py) equal allenai/hidden-networks on stored outputs
(tests/data/make_edgepopup_reference.py): the same signed-constant weights and scores give the same
scores after three SGD steps; the weights never move; `lth sparse` trains only the scores."""
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from conftest import ROOT

from lth.harness.config import base
from lth.models import zoo
from lth.pruning import supermask as SM
from lth.training.optim import make_optimizer

REF = np.load(os.path.join(ROOT, "tests", "data", "edgepopup_reference.npz"))


def test_scores_follow_the_reference_for_three_steps():
    k = float(REF["k"])
    model = zoo.build("lenet_12_8", 5, "kaiming_normal", (20,))
    params = jax.tree.map(np.asarray, model.init(jax.random.PRNGKey(0), jnp.zeros((1, 20)))["params"])
    names = ["fc_0", "fc_1", "out"]
    for i, n in enumerate(names):
        params[n] = {"kernel": jnp.asarray(REF[f"weight:{i}"]), "bias": jnp.zeros(params[n]["bias"].shape)}
    density = tuple(k if p.ndim == 2 else None for p in jax.tree.leaves(params))
    rule = SM.EdgePopup(density)
    for a, b in zip(jax.tree.leaves(rule.start_params(params)), jax.tree.leaves(params)):
        np.testing.assert_allclose(a, b, rtol=1e-6)   # the reference's weights are signed Kaiming constants
    t = base().train
    t.optimizer, t.lr, t.momentum, t.weight_decay = "sgd", 0.1, 0.9, 1e-4
    tx = rule.wrap(make_optimizer(t), lambda step: 0.1)
    state = tx.init(params)
    scores = {n: {"kernel": jnp.asarray(REF[f"scores:0:{i}"]), "bias": jnp.zeros(())} for i, n in enumerate(names)}
    state = state._replace(scores=scores, score_opt=make_optimizer(t).init(scores))
    x, y = jnp.asarray(REF["x"]), jnp.asarray(REF["y"])

    def loss(p, state):
        logits = model.apply({"params": rule.forward(p, state)}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(state):
        value, grads = jax.value_and_grad(loss)(params, state)
        updates, state = tx.update(grads, state, params)
        return value, updates, state
    for s in range(3):
        value, updates, state = step(state)
        assert abs(float(value) - float(REF[f"loss:{s}"])) < 1e-5
        assert all(not np.asarray(u).any() for u in jax.tree.leaves(updates))   # the weights are frozen
        for i, n in enumerate(names):
            np.testing.assert_allclose(np.asarray(state.scores[n]["kernel"]), REF[f"scores:{s + 1}:{i}"], atol=1e-6,
                                       err_msg=f"step {s + 1} {n}")


def test_subnet_keeps_gets_subnets_count_and_scores_start_kaiming_uniform():
    s = jnp.asarray(np.random.default_rng(0).standard_normal((7, 5)))
    for k in (0.5, 0.3, 0.05):
        m = np.asarray(SM.subnet(s, k))
        assert m.sum() == 35 - int((1 - k) * 35)                    # j = int((1 - k) · numel) zeros
        assert np.abs(np.asarray(s))[m].min() >= np.abs(np.asarray(s))[~m].max()   # by |S|
    p = {"a": jnp.ones((300, 100)), "b": jnp.ones((100,))}
    sc = SM.EdgePopup((0.5, None)).init_scores(p)   # leaves: a, b
    a = np.asarray(sc["a"])
    bound = 1 / math.sqrt(300)
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.99 * bound and abs(a.mean()) < 0.02 * bound


ZHOU = np.load(os.path.join(ROOT, "tests", "data", "supermask_zhou_reference.npz"))


class Injected(SM.Bernoulli):
    """The rule with the reference's Bernoulli draws in place of its own."""

    def samples(self, scores, key, count):
        return [None if not on else jnp.asarray(ZHOU[f"{self.case}/draw{i // 2}"])
                for i, on in enumerate(self.scored)]


def test_bernoulli_supermask_equals_the_reference_loss_and_score_gradients():
    """Zhou et al.'s supermask (tests/data/make_supermask_zhou_reference.py: the reference's own
    get_effective_mask / make_signed_consts / MaskedDense.call on TF2): signed constants, the
    forward with the same draws, and ∂L/∂S through the straight-through mask — with dynamic scaling,
    whose factor numel / Σm carries a gradient to S too."""
    for case, rescale in (("rescaled", True), ("plain", False)):
        rule = Injected((True, False, True, False), rescale=rescale)
        object.__setattr__(rule, "case", case)
        raw = [ZHOU[f"{case}/{k}{i}"] for i in range(2) for k in ("kernel", "bias")]
        params = rule.start_params([jnp.asarray(a) for a in raw])
        for i in range(2):
            np.testing.assert_allclose(params[2 * i], ZHOU[f"{case}/signed{i}"], rtol=1e-6)
        scores = [jnp.asarray(ZHOU[f"{case}/scores0"]), jnp.zeros(()), jnp.asarray(ZHOU[f"{case}/scores1"]),
                  jnp.zeros(())]
        state = SM.ZhouState(None, scores, None, jnp.int32(0), jax.random.PRNGKey(0))
        x, y = jnp.asarray(ZHOU[f"{case}/x"]), jnp.asarray(ZHOU[f"{case}/y"])

        def loss_fn(p):
            k0, b0, k1, b1 = rule.forward(p, state)
            logits = jax.nn.relu(x @ k0 + b0) @ k1 + b1
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, g = jax.value_and_grad(loss_fn)(params)
        np.testing.assert_allclose(loss, ZHOU[f"{case}/loss"], rtol=1e-5)
        gs = rule.score_grads(g, params, scores, rule.samples(scores, None, 0))
        for i in range(2):
            np.testing.assert_allclose(gs[2 * i], ZHOU[f"{case}/grad{i}"], rtol=2e-4, atol=1e-7)


def test_bernoulli_supermask_trains_only_the_scores_and_fixes_a_rescaled_sample():
    """Through `lth sparse`'s rule: the weights stay at their signed constants, the scores move, and
    the mask fixed at the last step is the sample whose kept weights hold W · numel / Σb."""
    rule = SM.Bernoulli((True, False), bias=0.0)
    w = jax.random.normal(jax.random.PRNGKey(1), (30, 20))
    params = rule.start_params([w, jnp.zeros(20)])
    tx = rule.wrap(optax.sgd(1.0), lambda t: 0.5)
    state = tx.init(params)
    g = [jnp.ones_like(params[0]), jnp.ones_like(params[1])]
    updates, new = tx.update(g, state, params)
    assert all(float(jnp.abs(u).max()) == 0.0 for u in updates)
    assert float(jnp.abs(new.scores[0]).max()) > 0 and int(new.count) == 1
    b = rule.samples(new.scores, new.key, new.count)[0]
    assert 0.3 < float(b.mean()) < 0.7
    mask = rule.masks(new)[0]
    np.testing.assert_array_equal(mask, b > 0)
    fixed = rule.fixed_params(params, new)[0]
    np.testing.assert_allclose(fixed, params[0] * b.size / b.sum(), rtol=1e-6)


def test_bernoulli_supermask_arm_keeps_its_weights_and_fixes_a_rescaled_sample():
    """One supermask arm through the training step, to its last step: every weight stays at its
    frozen value until the mask is fixed; then each prunable kernel holds sign(W₀) · std(W₀) · numel / Σb
    where kept and 0 elsewhere, its density near σ(bias) (the scores barely move in 20 steps)."""
    import dataclasses

    from conftest import tiny_config

    from lth.harness import run as harness
    from lth.harness.run import init_variables, keys
    from lth.pruning import masks as M
    from lth.studies import sparse
    from lth.training.loop import device_data

    s = harness.setup(tiny_config("train.duration=20it", "sparse.methods=supermask", "sparse.supermask_biases=1"),
                      sparse.COMMAND)
    dens = sparse.check(s)["supermask-bias=1"]
    mu = sparse.mask_update(s, "supermask", dens, "layerwise", "bias=1")
    t = dataclasses.replace(s.trainer, sparse=mu, tx=mu.wrap_tx(s.trainer.tx, s.trainer.schedule))
    params, ms = init_variables(s, keys(s, "init"))
    start = jax.jit(jax.vmap(mu.start_params))(params)
    state = t.new_state(start, ms, M.ones_like(params), 0, keys(s, "train"), keys(s, "data"))
    data = device_data(t, s.dataset)
    perm = t.epoch_perm(state.data_rng, 0)
    state, _ = t.run_steps(state, perm, data.x_train, data.y_train, s.total - 1)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(start)):
        np.testing.assert_array_equal(a, b)                 # frozen before the fix
    state, _ = t.run_steps(state, perm, data.x_train, data.y_train, 1)
    expect = 1 / (1 + math.exp(-1))
    for path, w, w0, m, d in zip(M.leaf_paths(params), jax.tree.leaves(state.params), jax.tree.leaves(start),
                                 jax.tree.leaves(state.masks), mu.density):
        w, w0, m = np.asarray(w)[0], np.asarray(w0)[0], np.asarray(m)[0]
        if d is None:
            np.testing.assert_array_equal(w, w0)
            continue
        assert abs(m.mean() - expect) < 4 * math.sqrt(expect * (1 - expect) / m.size), path
        np.testing.assert_allclose(w[m], w0[m] * m.size / m.sum(), rtol=1e-6)
        assert np.all(w[~m] == 0)
