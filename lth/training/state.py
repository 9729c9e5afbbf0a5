"""The state of R replicates in training, one pytree with a leading replicate axis: what a step
updates, what checkpoints hold and what a resumed run starts from."""
from __future__ import annotations

from typing import Any

import jax
from flax import struct


class TrainState(struct.PyTreeNode):
    params: Any
    model_state: Any      # non-param collections (e.g. batch_stats); {} when the model has none
    opt_state: Any
    masks: Any
    step: jax.Array       # int32: global iteration (levels that rewind to k start at k)
    rng: jax.Array        # key for per-step randomness (dropout, augmentation)
    data_rng: jax.Array   # key of the data order: epoch e is permutation(fold_in(data_rng, e))
    diverged: jax.Array   # int32: the step whose training loss was non-finite (or over max_loss); -1 = healthy
