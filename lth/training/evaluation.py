"""Evaluation of stacked replicates on padded splits: the Trainer's other half (lth/training/step.py), kept
apart for size. A split is padded and chunked once (`chunked`), so one compiled evaluator serves
every split; padding examples weigh 0."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from lth.training.devices import axis_size
from lth.training.objective import EVAL_KEY


def _slice(tree, i):
    """Replicate i of a stacked tree, keeping the replicate axis (length 1)."""
    return jax.tree.map(lambda a: a[i:i + 1], tree)


class Evaluation:
    """Mixed into lth.train.Trainer; uses its apply, forward_params, shard, over_replicates, replicate_mode, mesh,
    eval_batch_size and objective (the loss and metric: accuracy, or an MLM's token accuracy)."""

    @functools.cached_property
    def _jit_eval(self):
        return jax.jit(self.over_replicates(self._evaluate, (0, None, None, None, 0)))

    def _evaluate(self, state, xs, ys, ws, model_kw):
        obj = self.objective

        def chunk(args):
            i, xb, yb, wb = args
            if obj.prepares:   # the same masks at every evaluation (chunk i's fixed key)
                xb, yb = obj.prepare(jax.random.fold_in(jax.random.PRNGKey(EVAL_KEY), i), xb, yb)
            xb, yb, wb = map(self.shard, (xb, yb, wb))
            logits, _ = self.apply(self.forward_params(state.params, state), state.model_state, xb, False, state.rng,
                                   **model_kw)
            return obj.sums(logits, yb, wb)

        loss, correct, n = jax.lax.map(chunk, (jnp.arange(len(ws)), xs, ys, ws))
        n = jnp.maximum(jnp.sum(n), 1e-12)
        return jnp.sum(loss) / n, jnp.sum(correct) / n

    def evaluate(self, state, split, **model_kw):
        """(loss [R], accuracy [R]) on a padded split from `chunked`; `model_kw` (arrays with a
        leading replicate axis) go to the model, e.g. BERT's gates."""
        if self.replicate_mode == "sequential":
            r = int(np.shape(state.step)[0])
            outs = [self._jit_eval(_slice(state, i), *split, _slice(model_kw, i)) for i in range(r)]
            return tuple(jnp.concatenate(o) for o in zip(*outs))
        return self._jit_eval(state, *split, model_kw)

    def chunk_size(self, *sizes) -> int:
        """One evaluation chunk size for splits of these sizes (one compiled evaluator for all)."""
        d = axis_size(self.mesh, "data")
        return -(-min(self.eval_batch_size, max(sizes)) // d) * d

    def chunked(self, x, y, c=None):
        """Pad and reshape a split into evaluation chunks of `c` examples (device arrays, built once)."""
        c = c or self.chunk_size(len(y))
        n = -(-len(y) // c) * c
        pad = n - len(y)
        w = np.concatenate([np.ones(len(y), np.float32), np.zeros(pad, np.float32)])
        xp = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
        yp = np.concatenate([y, np.zeros((pad, *y.shape[1:]), y.dtype)])
        return (jnp.asarray(xp.reshape(n // c, c, *x.shape[1:])), jnp.asarray(yp.reshape(n // c, c, *y.shape[1:])),
                jnp.asarray(w.reshape(n // c, c)))
