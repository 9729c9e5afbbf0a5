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
