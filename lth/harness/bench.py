"""`lth bench`: speed of the train step per model on synthetic data of the model's usual shape —
compile time, steps/s, examples/s, achieved GFLOP/s (XLA cost analysis) against the device's
measured matmul peak, peak memory (device memory on accelerators, process RSS on CPU — cumulative
over the models of one invocation), and R vmapped replicates against R sequential runs."""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from lth import data as D
from lth.errors import UserError
from lth.harness.config import base
from lth.harness.rundir import read_json, write_json
from lth.harness.trainer import trainer_from_config
from lth.models import zoo
from lth.models.conv import resolve as resolve_conv
from lth.models.inits import Init
from lth.pruning import at_init as pai
from lth.pruning import masks as M
from lth.scores import make_scorer, obd
from lth.scores.common import loss_fn
from lth.training.devices import make_mesh, replicate_mode


def peak_memory_mb() -> float:
    """Peak device memory (accelerators) or peak resident memory of this process (CPU), in MB."""
    stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", 0.0)) if cost else 0.0


def matmul_peak(n: int | None = None, dtype=jnp.float32) -> float:
    """Measured GFLOP/s of an n×n matmul on the default device."""
    n = n or (8192 if jax.default_backend() == "gpu" else 2048)
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 1.0 or reps < 3:
        f(a).block_until_ready()
        reps += 1
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def _setup(name, batch, replicates, width, devices, mode="auto", conv_impl="auto", dataset=None):
    shape, classes, default_batch = zoo.family(name).inputs   # what the model's family is made for
    if dataset is not None:                      # that dataset's input shape and classes
        shape, classes = D.shapes()[dataset]
    batch = batch or default_batch
    cfg = base().train
    cfg.update(dict(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4, batch_size=batch, duration="1000000it"))
    model = zoo.build(name, classes, Init("kaiming_normal", conv_impl=conv_impl), shape, width)
    n_train = batch * 4
    trainer = trainer_from_config(model, cfg, n_train, mesh=make_mesh(devices),
                           replicates=replicate_mode(mode, model, shape, replicates))
    rng = np.random.default_rng(0)
    if hasattr(getattr(model, "cfg", None), "vocab_size"):  # token ids: [CLS] then words (no padding)
        ids = rng.integers(1000, model.cfg.vocab_size, (n_train, *shape))
        ids[:, 0] = 101
        x = jnp.asarray(ids, jnp.int32)
    else:
        x = jnp.asarray(rng.normal(size=(n_train, *shape)), jnp.float32)
    y = jnp.asarray(rng.integers(0, classes, n_train), jnp.int32)
    keys = jax.random.split(jax.random.PRNGKey(0), replicates)
    p, ms = trainer.init_replicates(keys, shape)
    state = trainer.new_state(p, ms, M.ones_like(p), 0, keys, keys)
    return trainer, state, x, y, batch


def _time_steps(trainer, state, x, y, seconds):
    perm = trainer.epoch_perm(state.data_rng, 0)
    steps, t0 = 0, time.perf_counter()
    n = trainer.steps_per_epoch   # segments of one epoch (4 steps), as training runs between evaluations
    while time.perf_counter() - t0 < seconds or steps < n:
        state, loss = trainer.run_steps(state, perm, x, y, n)
        loss.block_until_ready()
        steps += n
    return steps / (time.perf_counter() - t0)


def bench_model(name, batch=None, replicates=2, width=1.0, devices=0, seconds=2.0, mode="auto",
                conv_impl="auto", dataset=None) -> dict:
    trainer, state, x, y, batch = _setup(name, batch, 1, width, devices, conv_impl=conv_impl, dataset=dataset)
    perm = trainer.epoch_perm(state.data_rng, 0)
    t0 = time.perf_counter()
    trainer.run_steps(state, perm, x, y, 1)[1].block_until_ready()
    compile_s = time.perf_counter() - t0
    step = jax.jit(trainer.over_replicates(trainer.train_step, (0, 0, 0)))
    flops = _flops(step.lower(state, x[None, :batch], y[None, :batch]).compile())
    sps = _time_steps(trainer, state, x, y, seconds)
    out = {"model": name + (f" ({dataset})" if dataset else ""), "batch": batch,
           "conv_impl": resolve_conv(conv_impl) if any(
               np.ndim(leaf) == 5 for leaf in jax.tree.leaves(state.params)) else "-",
           "params": M.num_params(state.params), "compile_s": compile_s,
           "steps_per_s": sps, "examples_per_s": sps * batch, "gflops_per_step": flops / 1e9,
           "gflop_per_s": sps * flops / 1e9, "replicates": replicates, "peak_mb": peak_memory_mb()}
    if replicates > 1:
        tr, st, x, y, _ = _setup(name, batch, replicates, width, devices, mode, conv_impl, dataset)
        out["mode"] = tr.replicate_mode
        tr.run_steps(st, tr.epoch_perm(st.data_rng, 0), x, y, 1)[1].block_until_ready()
        out["vmapped_steps_per_s"] = _time_steps(tr, st, x, y, seconds)  # R models per step
        out["vmap_speedup"] = out["vmapped_steps_per_s"] / (sps / replicates)
    return out


def table(rows, peak) -> str:
    head = ("| model | params | batch | compile s | steps/s | examples/s | GFLOP/step | GFLOP/s | % of peak "
            "| peak MB | R | mode | R-replicate steps/s | vs R sequential |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params']:,} | {r['batch']} | {r['compile_s']:.1f} | {r['steps_per_s']:.2f} "
                     f"| {r['examples_per_s']:.0f} | {r['gflops_per_step']:.2f} | {r['gflop_per_s']:.1f} "
                     f"| {100 * r['gflop_per_s'] / peak:.0f}% | {r['peak_mb']:.0f} | {r['replicates']} "
                     f"| {r.get('mode', '-')} "
                     f"| {r.get('vmapped_steps_per_s', float('nan')):.2f} "
                     f"| {r.get('vmap_speedup', float('nan')):.2f}× |")
    return "\n".join(lines)


def synflow_bench(model_name="vgg16", rounds=100, log10=3.0, precision="auto", width=1.0) -> dict:
    """Seconds of iterative SynFlow on CIFAR-10 shapes: compile, score (forward/backward), select."""

    model = zoo.build(model_name, 10, zoo.synflow_init(model_name), (32, 32, 3), width)
    v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    prunable = M.prunable_tree(v["params"], r".*kernel")
    apply_fn = lambda variables, x: model.apply(variables, x, train=False)  # noqa: E731
    t0 = time.perf_counter()
    scorer = make_scorer("synflow", apply_fn, v, prunable, None, (32, 32, 3), synflow_precision=precision)
    scorer(v, M.ones_like(v["params"]), jax.random.PRNGKey(0))
    compile_s = time.perf_counter() - t0
    t = {}
    t0 = time.perf_counter()
    masks = pai.prune_at_init(scorer, v, prunable, 10 ** -log10, rounds=rounds, timings=t)
    total = time.perf_counter() - t0
    kept = pai.kept_per_layer(masks, prunable)
    return {"model": model_name, "rounds": rounds, "compression_log10": log10, "precision": scorer.precision,
            "compile_s": compile_s, "total_s": total, "score_s": t["score_s"], "select_s": t["select_s"],
            "kept": sum(kept.values()), "min_layer_kept": min(kept.values())}


def obd_bench(probes=8, batch=100) -> dict:
    """OBD Hessian diagonals on LeNet-300-100 (MNIST shapes): seconds per Hutchinson probe, and the
    exact diagonal (one HVP per parameter) timed on 8 chunks of 256 and extrapolated."""

    model = zoo.build("lenet_300_100", 10, "glorot_normal", (28, 28, 1))
    v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
    x = jax.random.normal(jax.random.PRNGKey(1), (batch, 28, 28, 1))
    y = jax.random.randint(jax.random.PRNGKey(2), (batch,), 0, 10)
    loss = loss_fn(lambda variables, xb: model.apply(variables, xb), v)
    out = {"params": M.num_params(v["params"]), "batch": batch}
    f = jax.jit(lambda p, k: obd.diag_hutchinson(loss, p, x, y, k, probes, chunk=probes))
    jax.block_until_ready(f(v["params"], jax.random.PRNGKey(0)))
    t0 = time.perf_counter()
    jax.block_until_ready(f(v["params"], jax.random.PRNGKey(1)))
    out["hutchinson_s_per_probe"] = (time.perf_counter() - t0) / probes
    from jax.flatten_util import ravel_pytree
    flat, unravel = ravel_pytree(v["params"])

    def block(start):
        basis = jax.nn.one_hot(start + jnp.arange(256), flat.shape[0], dtype=flat.dtype)
        hv = jax.vmap(lambda e: ravel_pytree(obd.hvp(loss, v["params"], x, y, unravel(e)))[0])(basis)
        return jnp.sum(hv * basis, axis=1)
    g = jax.jit(lambda s: jax.lax.map(block, s))
    starts = jnp.arange(0, 8 * 256, 256)
    jax.block_until_ready(g(starts))
    t0 = time.perf_counter()
    jax.block_until_ready(g(starts))
    per = (time.perf_counter() - t0) / (8 * 256)
    out["exact_s_per_param"] = per
    out["exact_full_s_projected"] = per * out["params"]
    return out


def _key(row) -> str:
    return f"{row['model']} {row.get('precision', '')}".strip()


def load(path: str) -> dict:
    """An earlier `--save` file (UserError when missing or not a bench file)."""

    if not os.path.isfile(path):
        raise UserError(f"bench file {path!r} not found; allowed: a file written by lth bench --save")
    out = read_json(path)
    if not isinstance(out, dict) or "rows" not in out:
        raise UserError(f"{path} is not an lth bench file (no 'rows'); allowed: a file written by lth bench --save")
    return out


def compare_table(now: dict, earlier: dict) -> str:
    """Markdown table: each result now, then, and now / then (higher is faster for steps/s, lower
    for seconds)."""
    metric, better = ("steps_per_s", "higher") if now["kind"] == "train" else ("total_s", "lower")
    then = {_key(r): r for r in earlier["rows"]}
    lines = [f"| model | {metric} now | {metric} then | now / then ({better} is faster) |", "|---|---|---|---|"]
    for r in now["rows"]:
        old = then.get(_key(r))
        ratio = f"{r[metric] / old[metric]:.2f}×" if old and old.get(metric) else "-"
        lines.append(f"| {_key(r)} | {r[metric]:.3g} | {old[metric] if old else float('nan'):.3g} | {ratio} |")
    return "\n".join(lines)


def save_and_compare(args, results: dict, earlier: dict | None) -> int:
    results["device"] = f"{jax.devices()[0].device_kind} ×{len(jax.devices())} ({jax.default_backend()})"
    if args.save:
        write_json(args.save, results)
        print(f"saved: {args.save}")
    if earlier is not None:
        print()
        print(compare_table(results, earlier))
    return 0
