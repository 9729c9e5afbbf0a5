"""Inference speed of models as shipped: jit-compiled eval-mode forward passes, latency at batch 1 and
throughput at batch 64, several models timed side by side in interleaved rounds (median of the timed
calls, each waited for with block_until_ready, after warm-up), and accuracy over a split in batches.
Only measured numbers: nothing is estimated from FLOPs."""
from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np


def compare(entries: dict, x, repeats: int = 10, warmup: int = 3, batches=(1, 64), min_seconds: float = 0.2) -> dict:
    """{name: {latency_ms_b1, throughput_b1, latency_ms_b64, throughput_b64}} of every
    `name: (forward(variables, x) -> logits, variables)`, measured side by side: each compiled and
    warmed up, then timed in rounds (one call of each per round, so the machine's drift falls on
    all alike) until every one has `repeats` calls and `min_seconds` of them; medians. x's rows are
    repeated to fill a batch when it has fewer."""
    out = {name: {} for name in entries}
    for b in batches:
        xb = jnp.asarray(np.resize(np.asarray(x), (b, *np.shape(x)[1:])).astype(np.asarray(x).dtype))
        calls = {}
        for name, (forward, variables) in entries.items():
            f = jax.jit(forward)
            calls[name] = (lambda f=f, v=variables: f(v, xb))
            for _ in range(warmup):
                jax.block_until_ready(calls[name]())
        times = {name: [] for name in entries}
        order = np.random.default_rng(0)
        while min(len(t) for t in times.values()) < repeats or min(sum(t) for t in times.values()) < min_seconds:
            for name in order.permutation(list(calls)):   # a new order every round: no stage always first
                call = calls[name]
                t0 = time.perf_counter()
                jax.block_until_ready(call())
                times[name].append(time.perf_counter() - t0)
        for name, t in times.items():
            sec = float(np.median(t))
            out[name][f"latency_ms_b{b}"] = 1000 * sec
            out[name][f"throughput_b{b}"] = b / sec
    return out


@functools.lru_cache(maxsize=64)
def _predict(forward):
    return jax.jit(lambda v, xb: jnp.argmax(forward(v, xb), -1))


def accuracy(forward, variables, x, y, batch: int = 256) -> float:
    """Top-1 accuracy of `forward` over (x, y), in batches of `batch` (the last one padded); the
    predictor is compiled once per `forward` function."""
    predict = _predict(forward)
    n = len(y)
    correct = 0
    for i in range(0, n, batch):
        xb = np.asarray(x[i:i + batch])
        k = len(xb)
        if k < batch:
            xb = np.concatenate([xb, np.repeat(xb[:1], batch - k, 0)])
        correct += int(np.sum(np.asarray(predict(variables, jnp.asarray(xb)))[:k] == np.asarray(y[i:i + k])))
    return correct / n
