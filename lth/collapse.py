"""The layer-collapse study (Tanaka et al. 2020, Fig. 1/3): prune at init to compressions 10^0 …
10^x with each score, no training, and record the weights kept in every layer.

Critical compression: the largest compression of the sweep up to which no layer is fully pruned.
Max compression: one weight left per layer (total prunable / number of prunable layers); a method
"reaches" it when no layer collapses there either.
"""
from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp

from lth import data as D, masks as M, pai, prune as P
from lth.errors import UserError
from lth.scores import get as get_score
from lth.models import registry
from lth.models.inits import Init

DATASET_SHAPES = {"cifar10": ((32, 32, 3), 10), "cifar100": ((32, 32, 3), 100), "mnist": ((28, 28, 1), 10),
                  "fashion_mnist": ((28, 28, 1), 10), "mnist1d": ((40,), 10)}


def load_batch(dataset, data_dir, n, seed):
    """(x, y, source): n training examples of `dataset`, or synthetic N(0,1) inputs with random labels
    (source 'synthetic') when the dataset is not prepared."""
    shape, classes = DATASET_SHAPES[dataset]
    try:
        import ml_collections
        ds = D.load(ml_collections.ConfigDict(dict(name=dataset, data_dir=data_dir, validation_size=0, split_seed=0)))
        return jnp.asarray(ds.x_train[:n]), jnp.asarray(ds.y_train[:n]), dataset
    except UserError:
        k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
        return jax.random.normal(k1, (n, *shape)), jax.random.randint(k2, (n,), 0, classes), "synthetic"


def compressions(max_log10: float, step: float, top: float):
    n = int(math.floor(max_log10 / step + 1e-9))
    points = [round(i * step, 6) for i in range(n + 1)]
    if max_log10 - points[-1] > 1e-9:
        points.append(round(max_log10, 6))
    if math.log10(top) - points[-1] > 1e-6:
        points.append(math.log10(top))  # the max-compression point itself
    return points


def run(model_name, methods, *, max_log10=3.0, step=0.25, dataset="cifar10", data_dir="", width=1.0, seed=0,
        rounds=0, schedule="exponential", scope="global", batch_size=128, batches=1, obd_method="hutchinson",
        obd_probes=8, precision="float64", init="synflow", prunable_rx=r".*kernel", log=print) -> dict:
    """init: 'synflow' (the SynFlow code's own init for the model, registry.synflow_init) or a kernel
    init name (zero biases, BatchNorm γ = 1)."""
    for m in methods:
        get_score(m)
    if step <= 0 or max_log10 < 0:
        raise UserError(f"bad sweep 10^0..10^{max_log10} in steps of {step}; allowed: max >= 0, step > 0")
    if dataset not in DATASET_SHAPES:
        raise UserError(f"unknown dataset {dataset!r}; allowed: {', '.join(sorted(DATASET_SHAPES))}")
    shape, classes = DATASET_SHAPES[dataset]
    spec = registry.synflow_init(model_name) if init == "synflow" else Init(init)
    model = registry.build(model_name, classes, spec, shape, width)
    variables = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, *shape)))
    prunable = M.prunable_tree(variables["params"], prunable_rx)
    sizes = {p: n for p, (_, n) in M.counts(M.ones_like(variables["params"]), prunable).items()}
    top = pai.max_compression(list(sizes.values()))
    if 10 ** max_log10 > top * (1 + 1e-9):
        raise UserError(f"compression 10^{max_log10} is beyond max compression 10^{math.log10(top):.3f} of {model_name} "
                        f"(one weight per layer); allowed: max <= {math.log10(top):.3f}")
    x, y, source = load_batch(dataset, data_dir, batch_size * batches, seed)
    if source == "synthetic":
        log(f"note: {dataset} is not prepared; data-dependent scores use SYNTHETIC inputs (N(0,1), random labels)")

    def apply_fn(v, xb):
        return model.apply(v, xb, train=False)
    points = compressions(max_log10, step, top)
    out = {"model": model_name, "width": width, "dataset": dataset, "data": source, "scope": scope,
           "init": {"name": init, **spec.as_dict()},
           "max_compression_log10": math.log10(top), "layers": sizes, "compressions_log10": points, "methods": {}}
    for method in methods:
        t0 = time.perf_counter()
        scorer = pai.Scorer(method, apply_fn, variables, prunable, (x, y), shape, batches=batches,
                            obd_method=obd_method, obd_probes=obd_probes, precision=precision)
        r = rounds or pai.default_rounds(method)
        kept, timing = {}, {"score_s": 0.0, "select_s": 0.0}
        single = r == 1
        scores = scorer(variables, M.ones_like(variables["params"]), jax.random.PRNGKey(seed)) if single else None
        for lg in points:
            if single:
                masks = P.prune(scores, M.ones_like(variables["params"]), prunable, density=10 ** -lg,
                                layerwise=scope == "layerwise")
            else:
                t = {}
                masks = pai.prune_at_init(scorer, variables, prunable, 10 ** -lg, rounds=r, schedule=schedule,
                                          scope=scope, rng=jax.random.PRNGKey(seed), timings=t)
                timing["score_s"] += t["score_s"]
                timing["select_s"] += t["select_s"]
            kept[f"{lg:g}"] = pai.kept_per_layer(masks, prunable)
        alive = [lg for lg in points if min(kept[f"{lg:g}"].values()) >= 1]
        critical = 0.0
        for lg in points:
            if lg not in alive:
                break
            critical = lg
        out["methods"][method] = {"critical_compression_log10": critical,
                                  "reaches_max_compression": points[-1] in alive, "rounds": r,
                                  "precision": scorer.precision, "kept_per_layer": kept,
                                  "seconds": time.perf_counter() - t0, **({} if single else timing)}
        log(f"{method:<10} critical compression 10^{critical:.2f}  reaches max: {points[-1] in alive}  "
            f"({time.perf_counter() - t0:.1f} s)")
    return out


def table(summary: dict) -> str:
    top = summary["max_compression_log10"]
    lines = [f"| method | critical compression | reaches max (10^{top:.2f}) | min layer density at 10^{summary['compressions_log10'][-1]:.2f} | seconds |",
             "|---|---|---|---|---|"]
    last = f"{summary['compressions_log10'][-1]:g}"
    for name, m in summary["methods"].items():
        dens = min(k / summary["layers"][p] for p, k in m["kept_per_layer"][last].items())
        lines.append(f"| {name} | 10^{m['critical_compression_log10']:.2f} | {'yes' if m['reaches_max_compression'] else 'no'} "
                     f"| {dens:.2e} | {m['seconds']:.1f} |")
    return "\n".join(lines)


