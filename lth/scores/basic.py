"""Data-free baselines: magnitude |w| and uniform random scores."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def magnitude(apply_fn, variables, masks, batch, rng):
    """|w| (on trained weights this is IMP's criterion)."""
    return jax.tree.map(jnp.abs, variables["params"])


def random(apply_fn, variables, masks, batch, rng):
    """Independent U(0, 1) scores per weight."""
    leaves, treedef = jax.tree.flatten(variables["params"])
    keys = jax.random.split(rng, len(leaves))
    # drawn flat and reshaped: the same values (partitionable threefry), far less XLA:CPU compile time
    return jax.tree.unflatten(treedef, [jax.random.uniform(k, (x.size,)).reshape(x.shape)
                                        for k, x in zip(keys, leaves)])
