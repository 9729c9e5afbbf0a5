"""`lth compress`: how small and how accurate can a ticket be — int8 quantization (post-training and
quantization-aware), knowledge distillation, and honest sizes in bytes.

Quantization is qwix's (google/qwix, PyPI `qwix`): its providers intercept the dot_generals, einsums
and convolutions of a Flax Linen model, so lth's models are quantized as they are, with no fake-quant
layers of ours (convolutions run as XLA's here, `model.conv_impl=xla`, which qwix intercepts; qwix
quantizes a convolution only with int8 activations, so `none` is refused for conv nets).
Weights: int8, symmetric (absmax), one scale per output channel; a pruned weight is 0, and 0 / scale
rounds to 0, so the mask survives (checked on every quantized kernel). Activations
(`compress.activations`): none (weight-only), dynamic (int8, scale from each batch at run time) or
static (int8, scales calibrated on `compress.calibration_batches` training batches before PTQ).
Quantization-aware fine-tuning (`compress.qat_duration` > 0) runs the one training loop over qwix's
QAT model (fake quantization with straight-through gradients), masks kept, replicates and
checkpoints as any arm, optionally distilled (`train.distill.*`); its weights are then quantized
like the ticket's. Embedding lookups, biases and LayerNorm / BatchNorm are not matmuls: they stay
float32 and are counted so.

Sizes (per replicate, averaged): dense float32 = 4 bytes per parameter. A sparse leaf stores its
non-zero values plus, per layer, whichever locates them in fewer bytes: a bitmask (ceil(n/8)) or
indices (2 bytes each when the layer has at most 65,536 entries, else 4). int8 values take 1 byte
plus one float32 scale per output channel.

Run layout: <run>/compress/level_<L>-<hash of compress.* and train.distill.*>/ with results.json
and qat/ (the fine-tuning arm, resumable).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lth import checkpoint, masks as M
from lth.config import base
from lth.errors import UserError, check_choice
from lth.experiment import read_json, write_json

ACTIVATIONS = ("none", "dynamic", "static")


# ----- the run and its level ---------------------------------------------------------------------
def _merge(into, stored):
    for k, v in stored.items():
        if isinstance(v, dict) and k in into and isinstance(into[k], ml_collections.ConfigDict):
            _merge(into[k], v)
        elif k in into:
            into[k] = v


def run_config(run_dir: str):
    """The lottery run's config: the schema's defaults, overwritten by the run's stored values
    (runs made before a section existed get its defaults)."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise UserError(f"--run-dir {run_dir!r} holds no lth run (no config.json); allowed: a run directory of `lth lottery`")
    stored = read_json(path)
    if stored.get("command") != "lottery":
        raise UserError(f"--run-dir {run_dir!r} is a `lth {stored.get('command')}` run; allowed: a run directory of `lth lottery`")
    cfg = base()
    _merge(cfg, stored["config"])
    return cfg


def finished_levels(run_dir: str) -> list[int]:
    out = []
    for name in os.listdir(run_dir):
        if name.startswith("level_") and name[6:].isdigit() and os.path.exists(os.path.join(run_dir, name, "metrics.json")):
            out.append(int(name[6:]))
    return sorted(out)


def _mean_acc(run_dir, level):
    rows = read_json(os.path.join(run_dir, f"level_{level}", "metrics.json"))["replicates"]
    accs = [r["test_accuracy"] for r in rows if r.get("test_accuracy") is not None]
    return (float(np.mean(accs)), float(np.std(accs))) if accs else (float("nan"), 0.0)


def choose_level(run_dir: str, level: int | None) -> int:
    """`level`, checked; default: the sparsest level whose mean test accuracy is at least the dense
    network's minus one standard deviation of it over replicates."""
    levels = finished_levels(run_dir)
    if level is not None:
        if level not in levels:
            raise UserError(f"level {level} is not a finished level of {run_dir}; allowed: "
                            f"{', '.join(map(str, levels)) or 'none (run `lth lottery` first)'}")
        return level
    if 0 not in levels:
        raise UserError(f"{run_dir} has no finished dense level (level_0); run `lth lottery` first")
    dense, std = _mean_acc(run_dir, 0)
    return max(lv for lv in levels if _mean_acc(run_dir, lv)[0] >= dense - std)


def validate(cfg) -> None:
    c = cfg.compress
    check_choice("compress.activations", c.activations, ACTIVATIONS)
    if c.calibration_batches < 1:
        raise UserError(f"compress.calibration_batches {c.calibration_batches} out of range; allowed: 1 or more")
    if c.qat_lr < 0:
        raise UserError(f"compress.qat_lr {c.qat_lr} out of range; allowed: 0 (train.lr / 10) or a positive rate")


def _command():
    from lth.run import BASE_SECTIONS, Command

    return Command("compress", BASE_SECTIONS + ("prune", "lottery", "compress"), validate=validate)


SETTABLE = ("compress.", "train.distill.", "run.")   # what --set may change on a finished run


def prepare(run_dir: str, overrides, level: int | None, progress: bool = True):
    """(setup, level, results dir): the run's config with `overrides`, every check done, nothing written."""
    from lth.config import apply_overrides
    from lth.distill import own_level
    from lth.run import setup

    if not os.path.isdir(run_dir):
        raise UserError(f"--run-dir {run_dir!r} does not exist; allowed: a run directory of `lth lottery`")
    cfg = run_config(run_dir)
    for item in overrides:
        if not item.split("=", 1)[0].strip().startswith(SETTABLE):
            raise UserError(f"--set {item!r} would change the trained run; allowed: {', '.join(k + '*' for k in SETTABLE)}")
    apply_overrides(cfg, overrides)
    cfg.run.progress = cfg.run.progress and progress
    cfg.model.conv_impl = "xla"   # qwix quantizes lax.conv_general_dilated (lth's GEMM path is plain matmuls)
    level = choose_level(run_dir, level)
    own = own_level(cfg.train.distill.teacher)
    if own is not None and own not in finished_levels(run_dir):
        raise UserError(f"train.distill.teacher {cfg.train.distill.teacher!r} is not a finished level of {run_dir}; "
                        f"allowed: {', '.join('level_%d' % lv for lv in finished_levels(run_dir))}")
    s = setup(cfg, _command())
    check_supported(s.trainer.model, cfg, s.input_shape, s.dataset.x_train.dtype)
    s.duration(cfg.compress.qat_duration, "compress.qat_duration")
    return s, level, results_dir(run_dir, cfg, level)


def results_dir(run_dir: str, cfg, level: int) -> str:
    ident = {"level": level, "compress": json.loads(cfg.compress.to_json()),
             "distill": json.loads(cfg.train.distill.to_json()) if cfg.train.distill.teacher else None}
    h = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    return os.path.join(run_dir, "compress", f"level_{level}-{h}")


# ----- quantization (qwix) -------------------------------------------------------------------------
def rules(cfg, for_qat: bool = False):
    """qwix rules for every module: int8 weights; int8 activations unless 'none'. QAT fine-tunes
    with dynamic activation scales (static ones are calibrated afterwards, as for the ticket)."""
    import qwix

    act = cfg.compress.activations
    kw = {}
    if act != "none":
        kw = dict(act_qtype=jnp.int8, act_calibration_method=cfg.compress.act_calibration,
                  act_static_scale=act == "static" and not for_qat)
    return [qwix.QtRule(module_path=".*", weight_qtype=jnp.int8, **kw)]


def check_supported(model, cfg, input_shape, dtype):
    """UserError for a combination qwix does not quantize: convolutions need int8 activations too."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *input_shape), dtype)))
    if cfg.compress.activations == "none" and any(np.ndim(x) == 4 for x in jax.tree.leaves(shapes["params"])):
        raise UserError(f"compress.activations 'none' (weight-only) with model {cfg.model.name!r}: qwix quantizes "
                        f"convolutions only with int8 activations; allowed: dynamic, static")


def _is_q(a):
    return hasattr(a, "qvalue") and hasattr(a, "scale")


def quantize(model, cfg, params, model_state, calib):
    """(PTQ model, quantized params of one replicate). `calib`: [n, B, ...] training batches that
    calibrate static activation scales."""
    import qwix

    ptq = qwix.quantize_model(model, qwix.PtqProvider(rules(cfg)))
    x0 = calib[0]
    abstract = jax.eval_shape(lambda: ptq.init(jax.random.PRNGKey(0), x0))
    stats = {}
    if cfg.compress.activations == "static":
        qt = qwix.quantize_model(model, qwix.QtProvider(rules(cfg)))
        init = jax.eval_shape(lambda: qt.init(jax.random.PRNGKey(0), x0))
        stats = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), init.get("quant_stats", {}))
        # not under jax.jit: qwix's conv statistics leak tracers there; a few eager batches cost little
        step = lambda st, xb: qt.apply({"params": params, **model_state, "quant_stats": st}, xb,  # noqa: E731
                                       train=False, mutable=["quant_stats"])[1]["quant_stats"]
        for xb in calib:
            stats = step(stats, xb)
    qp = qwix.quantize_params(params, abstract["params"], stats, allow_extra_params=True)
    return ptq, qp


def quantized_leaves(qparams) -> dict:
    """{path: QArray} of the quantized kernels."""
    flat = jax.tree_util.tree_flatten_with_path(qparams, is_leaf=_is_q)[0]
    return {"/".join(str(k.key) for k in path if hasattr(k, "key")): leaf for path, leaf in flat if _is_q(leaf)}


def dequantize(q):
    """float32 weights of a QArray (per-channel scale broadcast over the kernel)."""
    return np.asarray(q.qvalue, np.float32) * np.asarray(q.scale, np.float32)


# ----- sizes ---------------------------------------------------------------------------------------
def sparse_bytes(n: int, nnz: int, value_bytes: int) -> dict:
    """Bytes of a sparse leaf of n entries with nnz non-zeros: values + the cheaper of a bitmask
    (ceil(n/8)) and indices (2 bytes each up to 65,536 entries, else 4)."""
    bitmask = math.ceil(n / 8)
    indices = nnz * (2 if n <= 65536 else 4)
    return {"values": nnz * value_bytes, "locate": min(bitmask, indices),
            "how": "bitmask" if bitmask <= indices else "indices"}


def sizes(params, masks, prunable, quantized: dict) -> dict:
    """Bytes of one replicate: dense f32, sparse f32, sparse int8 (quantized kernels), with per-leaf
    detail. `quantized`: {path: QArray} (their scales are counted)."""
    paths = M.leaf_paths(params)
    dense = sparse32 = sparse8 = 0
    leaves = []
    for path, p, m, pr in zip(paths, jax.tree.leaves(params), jax.tree.leaves(masks), jax.tree.leaves(prunable)):
        n = int(np.size(p))
        dense += 4 * n
        q = quantized.get(path)
        if pr:
            nnz = int(np.count_nonzero(np.asarray(m)))
            s32 = sparse_bytes(n, nnz, 4)
            b32 = s32["values"] + s32["locate"]
        else:
            nnz, s32, b32 = n, None, 4 * n
        if q is not None:
            scales = 4 * int(np.size(q.scale))
            b8 = (sparse_bytes(n, nnz, 1)["values"] + s32["locate"] if pr else n) + scales
        else:
            b8 = b32
        sparse32 += b32
        sparse8 += b8
        leaves.append({"path": path, "size": n, "nonzero": nnz, "f32_bytes": b32, "int8_bytes": b8,
                       "locate": s32["how"] if s32 else "dense", "int8": q is not None})
    return {"dense_f32": dense, "sparse_f32": sparse32, "sparse_int8": sparse8, "leaves": leaves}


# ----- the command -----------------------------------------------------------------------------------
def accuracy(apply_fn, variables, split) -> float:
    """Test accuracy of one replicate's `variables` over a chunked split (trainer.chunked)."""
    xs, ys, ws = split
    f = jax.jit(lambda v, xb: jnp.argmax(apply_fn(v, xb), -1))
    correct = sum(float(jnp.sum((f(variables, xs[i]) == ys[i]) * ws[i])) for i in range(xs.shape[0]))
    return correct / float(jnp.sum(ws))


def ptq_stage(s, model, params, model_state, masks, calib, split) -> dict:
    """PTQ of every replicate: test accuracy, zero-stays-zero check, sizes (means over replicates)."""
    accs, size_rows, zeros_kept = [], [], True
    for r in range(s.replicates):
        p, ms, m = M.index(params, r), M.index(model_state, r), M.index(masks, r)
        ptq, qp = quantize(model, s.cfg, p, ms, calib)
        q = quantized_leaves(qp)
        if not q:
            raise UserError(f"qwix quantized no layer of model {s.cfg.model.name!r}; allowed: models whose layers are "
                            f"matmuls (MLPs, BERTs)")
        mask_of = dict(zip(M.leaf_paths(m), jax.tree.leaves(m)))
        for path, leaf in q.items():
            zeros_kept &= not np.any(np.asarray(leaf.qvalue)[~np.asarray(mask_of[path])])
        accs.append(accuracy(lambda v, x: ptq.apply(v, x, train=False), {"params": qp, **ms}, split))
        size_rows.append(sizes(p, m, s.prunable, q))
    keys = ("dense_f32", "sparse_f32", "sparse_int8")
    return {"test_accuracy": accs, "zeros_kept": bool(zeros_kept), "quantized_layers": sorted(q),
            **{k: float(np.mean([row[k] for row in size_rows])) for k in keys}, "leaves": size_rows[0]["leaves"]}


def qat_setup(s, model):
    """A Setup whose trainer runs qwix's QAT model for compress.qat_duration at compress.qat_lr."""
    import qwix

    from lth.config import parse_duration
    from lth.train import make_trainer

    cfg = s.cfg
    t = ml_collections.ConfigDict(cfg.train.to_dict())
    t.duration = cfg.compress.qat_duration
    t.lr = cfg.compress.qat_lr or cfg.train.lr / 10
    t.schedule, t.warmup = "constant", "0it"
    qat = qwix.quantize_model(model, qwix.QtProvider(rules(cfg, for_qat=True)))
    trainer = make_trainer(qat, t, len(s.dataset.y_train), augment=s.trainer.augment, mesh=s.trainer.mesh,
                           replicates=s.trainer.replicate_mode)
    spe = trainer.steps_per_epoch
    total = parse_duration(t.duration, spe, "compress.qat_duration")
    return dataclasses.replace(s, trainer=trainer, total=total, eval_every=total, _scorers={})


def run(s, run_dir: str, level: int, out_dir: str, log=print) -> dict:
    """Every stage of one level: f32 ticket, int8 PTQ, int8 QAT (and QAT + KD with a teacher)."""
    from lth.fit import device_data
    from lth.run import train_arm

    cfg, t = s.cfg, s.trainer
    model = t.model
    ds = s.dataset
    r = s.replicates
    keys = jax.random.split(jax.random.PRNGKey(0), r)
    p0, ms0 = t.init_replicates(keys, s.input_shape)
    like = t.new_state(p0, ms0, M.ones_like(p0), 0, keys, keys)
    final = checkpoint.load(os.path.join(run_dir, f"level_{level}", "final"), like)
    data = device_data(t, ds)
    split = data.test
    b = cfg.train.batch_size
    n = min(cfg.compress.calibration_batches, len(ds.y_train) // b)
    calib = jnp.asarray(ds.x_train[:n * b].reshape(n, b, *ds.x_train.shape[1:]))
    dense_acc, dense_std = _mean_acc(run_dir, 0) if 0 in finished_levels(run_dir) else (float("nan"), 0.0)
    f32 = [float(a) for a in np.asarray(t.evaluate(final, split)[1])]
    stages = {"dense_f32": {"test_accuracy": dense_acc, "test_accuracy_std": dense_std}}
    ptq = ptq_stage(s, model, final.params, final.model_state, final.masks, calib, split)
    stages["ticket_f32"] = {"test_accuracy": f32}
    stages["ticket_int8_ptq"] = {k: v for k, v in ptq.items() if k != "leaves"}
    log(f"ticket f32 {np.mean(f32):.4f}; int8 PTQ ({cfg.compress.activations} activations) "
        f"{np.mean(ptq['test_accuracy']):.4f}")
    arms = []
    if s.duration(cfg.compress.qat_duration, "compress.qat_duration") > 0:
        arms.append(("ticket_int8_qat", False))
        if cfg.train.distill.teacher:
            arms.append(("ticket_int8_qat_kd", True))
    for name, kd in arms:
        sq = qat_setup(s, model)
        arm_data = sq.distilling(data, run_dir, level) if kd else data
        if kd and arm_data.teacher is None:
            raise UserError(f"train.distill.teacher {cfg.train.distill.teacher!r} cannot teach level {level} (it is "
                            f"that level or a later one); allowed: an earlier level or another run's level")
        state, _ = train_arm(sq, os.path.join(out_dir, name), final.params, final.model_state, final.masks, 0,
                             arm_data, label=name)
        out = ptq_stage(s, model, state.params, state.model_state, state.masks, calib, split)
        stages[name] = {k: v for k, v in out.items() if k != "leaves"}
        if kd:
            stages[name]["teacher"] = sq.teacher.path
        log(f"{name}: {np.mean(out['test_accuracy']):.4f}")
    for st in stages.values():
        acc = st["test_accuracy"]
        if isinstance(acc, list):
            st["test_accuracy"], st["test_accuracy_std"] = float(np.mean(acc)), float(np.std(acc))
            st["replicates"] = acc
    density = float(np.mean(M.density(final.masks, s.prunable, axis=0)[0]))
    result = {"run_dir": run_dir, "level": level, "density": density, "activations": cfg.compress.activations,
              "qat_duration": cfg.compress.qat_duration, "distill": cfg.train.distill.to_dict(),
              "bytes": {k: ptq[k] for k in ("dense_f32", "sparse_f32", "sparse_int8")},
              "stages": stages, "leaves": ptq["leaves"]}
    write_json(os.path.join(out_dir, "results.json"), result)
    return result


def table(result) -> str:
    b = result["bytes"]
    size = {"dense_f32": b["dense_f32"], "ticket_f32": b["sparse_f32"]}
    names = {"dense_f32": "dense f32 (level 0)", "ticket_f32": f"ticket f32 (level {result['level']})",
             "ticket_int8_ptq": "ticket int8 PTQ", "ticket_int8_qat": "ticket int8 QAT",
             "ticket_int8_qat_kd": "ticket int8 QAT + KD"}
    lines = [f"level {result['level']}: density {100 * result['density']:.2f}% of the prunable weights; "
             f"activations {result['activations']}", "",
             "| stage | test accuracy | bytes | × smaller than dense f32 |", "|---|---|---|---|"]
    for key, st in result["stages"].items():
        nbytes = size.get(key, b["sparse_int8"])
        acc = f"{100 * st['test_accuracy']:.2f}" + (f" ± {100 * st['test_accuracy_std']:.2f}" if st.get("test_accuracy_std") else "")
        lines.append(f"| {names[key]} | {acc} | {nbytes:,.0f} | {b['dense_f32'] / nbytes:.1f}× |")
    return "\n".join(lines)
