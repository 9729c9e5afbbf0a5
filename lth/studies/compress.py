"""`lth compress`: how small and how accurate can a ticket be — int8 quantization (post-training and
quantization-aware), knowledge distillation, and honest sizes in bytes (lth.compression.quantize: qwix, sizes).

Stages of one level: the f32 ticket; int8 PTQ; and, with `compress.qat_duration` > 0, quantization-
aware fine-tuning through the one training loop over qwix's QAT model (fake quantization with
straight-through gradients; masks kept, replicates and checkpoints as any arm), without and — with
`train.distill.teacher` set — with distillation; the fine-tuned weights are then quantized as PTQ
quantizes the ticket. Convolutions run as XLA's here (`model.conv_impl=xla`), which qwix intercepts.

Run layout: <run>/compress/level_<L>-<hash of compress.* and train.distill.*>/ with results.json
and ticket_int8_qat[_kd]/ (the fine-tuning arms, resumable).
"""
from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lth.compression import lowbit as LB
from lth.compression import quantize as Q
from lth.errors import UserError, check_choice
from lth.harness import checkpoint, paths
from lth.harness.config import apply_overrides, base
from lth.harness.run import BASE_SECTIONS, Command, setup, train_arm
from lth.harness.rundir import read_json, write_json
from lth.harness.teacher import own_level
from lth.options import options
from lth.pruning import masks as M
from lth.studies import compress_quant, compress_stages
from lth.training.loop import device_data

ACTIVATIONS = ("none", "dynamic", "static")

# The `compress` section of the config: quantization here, the physical stages' beside their code.
QUANT_OPTIONS = options(
    activations=("dynamic", "none (weight-only) | dynamic (int8, per batch) | static (int8, calibrated)"),
    act_calibration=("absmax", "qwix calibration of activation scales: absmax[,c] | minmax | rms,c"),
    calibration_batches=(8, "training batches that calibrate static activation scales"),
    qat_duration=("0it", "quantization-aware fine-tuning of the ticket ('0it' = PTQ only)"),
    qat_lr=(0.0, "its constant learning rate (0 = train.lr / 10)"),
    low_bits=("", "comma list of weight bits for more PTQ stages: 4 | 2 (int4 / int2 kernels with per-group scales; "
                  "lth/compression/lowbit.py)"),
    group_size=(128, "low-bit and mixed stages: inputs per weight scale (qwix tile_size; 0 = one per output "
                     "channel); must divide every quantized kernel's inputs"),
    mixed=("", "Q-BERT mixed precision: comma list of weight bits (e.g. 8,4,2) given to equal groups of kernels by "
               "their Hessian's top eigenvalue, the largest the most bits ('' = no mixed stage)"),
    hessian_batches=(2, "mixed: calibration batches (train.batch_size each) whose eigenvalues give Ω = |mean| + std"),
    power_iters=(100, "mixed: the power iteration's most steps (stops at a relative change under 1e-3)"),
)
OPTIONS = {"compress": {**QUANT_OPTIONS, **compress_stages.OPTIONS}}

HELP = ("int8, distillation, shrinking, factorization of a ticket: accuracy, parameters, bytes and measured speed "
        "per stage")
DESCRIPTION = ("Quantize a finished level of a `lth lottery` run to int8 with qwix (per-channel weights; activations "
               "per compress.activations), optionally fine-tune it quantization-aware (compress.qat_duration) and "
               "distilled (train.distill.*); remove its dead units and (BERT) the least important heads / MLPs from "
               "the arrays (compress.shrink, compress.heads, compress.mlps), factorize kernels by truncated SVD "
               "(compress.factorize with compress.rank or compress.energy, fine-tuned for compress.finetune), time "
               "every stage (compress.speed), and report accuracy, parameters, bytes, latency and throughput for "
               "each stage.")
FROM_RUN = True                 # a study of one level of a finished `lth lottery` run (--run-dir, --level)
RESULT_FILE = "results.json"


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
        raise UserError(f"--run-dir {run_dir!r} holds no lth run (no config.json); "
                        f"allowed: a run directory of `lth lottery`")
    stored = read_json(path)
    if stored.get("command") != "lottery":
        raise UserError(f"--run-dir {run_dir!r} is a `lth {stored.get('command')}` run; "
                        f"allowed: a run directory of `lth lottery`")
    cfg = base()
    _merge(cfg, stored["config"])
    return cfg


finished_levels = paths.finished_levels


def _mean_acc(run_dir, level):
    rows = read_json(paths.metrics(paths.level(run_dir, level)))["replicates"]
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
    LB.parse_bits(c.low_bits, "compress.low_bits")
    LB.parse_bits(c.mixed, "compress.mixed")
    if c.group_size < 0:
        raise UserError(f"compress.group_size {c.group_size} out of range; allowed: 0 (per channel) or a group size")
    if c.hessian_batches < 1 or c.power_iters < 1:
        raise UserError(f"compress.hessian_batches {c.hessian_batches} / compress.power_iters {c.power_iters} out of "
                        f"range; allowed: 1 or more")
    compress_stages.validate(cfg)


def check_groups(s) -> None:
    """Low-bit and mixed stages: compress.group_size divides the inputs of every kernel qwix quantizes."""
    c = s.cfg.compress
    if not (c.group_size and (LB.parse_bits(c.low_bits, "") or LB.parse_bits(c.mixed, ""))):
        return
    bad = [f"{p} ({x.shape[-2]} inputs)" for p, x in zip(M.leaf_paths(s.param_shapes), jax.tree.leaves(s.param_shapes))
           if p.endswith("kernel") and len(x.shape) == 2 and x.shape[-2] % c.group_size]
    if bad:
        raise UserError(f"compress.group_size {c.group_size} does not divide the inputs of {', '.join(bad[:4])}; "
                        f"allowed: a common divisor, or 0 (one scale per output channel)")


COMMAND = Command("compress", BASE_SECTIONS + ("prune", "lottery", "compress"), validate=validate)
RESULTS = Command("compress_results", ("compress", "train.distill"))   # the results directory's identity


SETTABLE = ("compress.", "train.distill.", "run.")   # what --set may change on a finished run


@dataclasses.dataclass
class Job:
    """What `run` compresses: a finished level of a lottery run, with its setup and the physical plan."""

    setup: object
    run_dir: str
    level: int
    plan: object = None

    @property
    def cfg(self):
        return self.setup.cfg


def finished_run_config(run_dir: str, overrides, settable, progress: bool):
    """The config of a finished `lth lottery` run with `overrides` applied, each of which may only
    change the keys starting with one of `settable` (what leaves the trained run as it is)."""
    if not os.path.isdir(run_dir):
        raise UserError(f"--run-dir {run_dir!r} does not exist; allowed: a run directory of `lth lottery`")
    cfg = run_config(run_dir)
    for item in overrides:
        if not item.split("=", 1)[0].strip().startswith(settable):
            raise UserError(f"--set {item!r} would change the trained run; "
                            f"allowed: {', '.join(k + '*' for k in settable)}")
    apply_overrides(cfg, overrides)
    cfg.run.progress = cfg.run.progress and progress
    return cfg


def from_run(run_dir: str, overrides=(), level: int | None = None, progress: bool = True):
    """(job, results dir): the run's config with `overrides`, every check done (the physical stages'
    too: lth/studies/compress_stages.py), nothing written."""
    cfg = finished_run_config(run_dir, overrides, SETTABLE, progress)
    cfg.model.conv_impl = "xla"   # qwix quantizes lax.conv_general_dilated (lth's GEMM path is plain matmuls)
    level = choose_level(run_dir, level)
    own = own_level(cfg.train.distill.teacher)
    if own is not None and own not in finished_levels(run_dir):
        raise UserError(f"train.distill.teacher {cfg.train.distill.teacher!r} is not a finished level of {run_dir}; "
                        f"allowed: {', '.join('level_%d' % lv for lv in finished_levels(run_dir))}")
    s = setup(cfg, COMMAND)
    Q.check_supported(s.trainer.model, cfg, s.input_shape, s.dataset.x_train.dtype)
    check_groups(s)
    s.duration(cfg.compress.qat_duration, "compress.qat_duration")
    s.duration(cfg.compress.finetune, "compress.finetune")
    plan = None
    if compress_stages.enabled(cfg):
        final = load_level(s, run_dir, level)
        plan = compress_stages.plan(s, final, *compress_stages.gates(s, final))
    return Job(s, run_dir, level, plan), level_results_dir(run_dir, cfg, level)


def load_level(s, run_dir: str, level: int):
    """The final TrainState [R] of a finished level."""
    t = s.trainer
    keys = jax.random.split(jax.random.PRNGKey(0), s.replicates)
    p0, ms0 = t.init_replicates(keys, s.input_shape)
    return checkpoint.load_final(paths.level(run_dir, level), t.new_state(p0, ms0, M.ones_like(p0), 0, keys, keys),
                                 own=False)


def level_results_dir(run_dir: str, cfg, level: int) -> str:
    return RESULTS.dir_for(os.path.join(run_dir, "compress"), f"level_{level}", cfg)


# ----- the command -----------------------------------------------------------------------------------
def run(job: Job, out_dir: str, log=print) -> dict:
    """The study (lth/studies/__init__.py): every stage of the job's level, written to `out_dir`."""
    return stages(job.setup, job.run_dir, job.level, out_dir, log=log, plan=job.plan)


def describe(job: Job) -> str:
    s = job.setup
    return f"level {job.level} of {job.run_dir}: {s.cfg.model.name} on {s.cfg.data.name}, R={s.replicates}"


def files(result) -> list:
    return [f"results: {os.path.join(result.run_dir, RESULT_FILE)}"]


def stages(s, run_dir: str, level: int, out_dir: str, log=print, plan=None) -> dict:
    """Every stage of one level: f32 ticket, int8 PTQ, int8 QAT (and QAT + KD with a teacher), and
    with `plan` (from from_run) the physical stages with their speed."""

    cfg, t = s.cfg, s.trainer
    model = t.model
    ds = s.dataset
    final = plan.final if plan is not None else load_level(s, run_dir, level)
    data = device_data(t, ds)
    split = data.test
    b = cfg.train.batch_size
    n = min(cfg.compress.calibration_batches, len(ds.y_train) // b)
    calib = jnp.asarray(ds.x_train[:n * b].reshape(n, b, *ds.x_train.shape[1:]))
    dense_acc, dense_std = _mean_acc(run_dir, 0) if 0 in finished_levels(run_dir) else (float("nan"), 0.0)
    f32 = [float(a) for a in np.asarray(t.evaluate(final, split)[1])]
    stages = {"dense_f32": {"test_accuracy": dense_acc, "test_accuracy_std": dense_std}}
    quantizer = Q.Quantizer(model, cfg, calib[0])   # one PTQ model and compiled predictor for every stage
    ptq = compress_quant.ptq_stage(s, quantizer, final.params, final.model_state, final.masks, calib, split)
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
        sq = compress_quant.qat_setup(s, model)
        arm_data = sq.distilling(data, run_dir, level) if kd else data
        if kd and arm_data.teacher is None:
            raise UserError(f"train.distill.teacher {cfg.train.distill.teacher!r} cannot teach level {level} (it is "
                            f"that level or a later one); allowed: an earlier level or another run's level")
        state, _ = train_arm(sq, os.path.join(out_dir, name), final.params, final.model_state, final.masks, 0,
                             arm_data, label=name)
        out = compress_quant.ptq_stage(s, quantizer, state.params, state.model_state, state.masks, calib, split)
        stages[name] = {k: v for k, v in out.items() if k != "leaves"}
        if kd:
            stages[name]["teacher"] = sq.teacher.path
        log(f"{name}: {np.mean(out['test_accuracy']):.4f}")
    lowbit_stages(s, model, final, calib, split, stages, log)
    for st in stages.values():
        acc = st["test_accuracy"]
        if isinstance(acc, list):
            st["test_accuracy"], st["test_accuracy_std"] = float(np.mean(acc)), float(np.std(acc))
            st["replicates"] = acc
    if plan is not None:
        dense = final if level == 0 else load_level(s, run_dir, 0) if 0 in finished_levels(run_dir) else None
        quantizer_for = lambda m: quantizer if m is model else Q.Quantizer(m, cfg, calib[0])  # noqa: E731
        result_physical = compress_stages.run(s, final, dense, plan, out_dir, quantizer_for, calib, log)
    density = float(np.mean(M.density(final.masks, s.prunable, axis=0)[0]))
    result = {"run_dir": run_dir, "level": level, "density": density, "activations": cfg.compress.activations,
              "qat_duration": cfg.compress.qat_duration, "distill": cfg.train.distill.to_dict(),
              "bytes": {k: ptq[k] for k in ("dense_f32", "sparse_f32", "sparse_int8")},
              "stages": stages, "leaves": ptq["leaves"]}
    if plan is not None:
        result["physical"] = result_physical
        result["physical_config"] = {k: cfg.compress[k] for k in ("heads", "mlps", "shrink", "factorize", "rank",
                                                                  "energy", "finetune", "speed")}
    write_json(os.path.join(out_dir, "results.json"), result)
    return result


def lowbit_stages(s, model, final, calib, split, stages, log) -> None:
    """PTQ at each of compress.low_bits (int4 / int2 per-group kernels) and Q-BERT's mixed precision
    (compress.mixed): one allocation from replicate 0's Hessian eigenvalues, used by every replicate."""
    cfg = s.cfg
    c = cfg.compress
    g = int(c.group_size)
    for bits in LB.parse_bits(c.low_bits, "compress.low_bits"):
        q = Q.Quantizer(model, cfg, calib[0], bits=bits, group=g)
        out = compress_quant.ptq_stage(s, q, final.params, final.model_state, final.masks, calib, split)
        stages[f"ticket_int{bits}_ptq"] = {**{k: v for k, v in out.items() if k not in ("leaves", "sparse_int8")},
                                          "bytes": out["sparse_int8"], "bits": bits, "group_size": g}
        log(f"int{bits} PTQ (groups of {g or 'all'} inputs): {np.mean(out['test_accuracy']):.4f}")
    widths = LB.parse_bits(c.mixed, "compress.mixed")
    if not widths:
        return
    ds, b = s.dataset, cfg.train.batch_size
    n = min(c.hessian_batches, len(ds.y_train) // b)
    batches = [(jnp.asarray(ds.x_train[i * b:(i + 1) * b]), jnp.asarray(ds.y_train[i * b:(i + 1) * b]))
               for i in range(n)]
    ms = M.index(final.model_state, 0)
    apply_fn = lambda p, x: model.apply({"params": p, **ms}, x, train=False)  # noqa: E731
    paths = stages["ticket_int8_ptq"]["quantized_layers"]
    sens = LB.sensitivities(apply_fn, M.index(final.params, 0), paths, batches, s.trainer.objective.loss,
                            jax.random.PRNGKey(cfg.seed), iters=c.power_iters)
    per_layer = LB.allocate({p: v["omega"] for p, v in sens.items()}, widths)
    q = Q.Quantizer(model, cfg, calib[0], group=g, per_layer=per_layer)
    out = compress_quant.ptq_stage(s, q, final.params, final.model_state, final.masks, calib, split)
    sizes = {p: int(np.prod(x.shape)) for p, x in zip(M.leaf_paths(s.param_shapes), jax.tree.leaves(s.param_shapes))}
    stages["ticket_mixed_ptq"] = {**{k: v for k, v in out.items() if k not in ("leaves", "sparse_int8")},
                                  "bytes": out["sparse_int8"], "bits": per_layer, "group_size": g,
                                  "mean_bits": LB.mean_bits(per_layer, sizes),
                                  "omega": {p: v["omega"] for p, v in sens.items()}}
    log(f"mixed {'/'.join(map(str, widths))}-bit PTQ (Q-BERT, mean {stages['ticket_mixed_ptq']['mean_bits']:.2f} "
        f"bits): {np.mean(out['test_accuracy']):.4f}")


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
        nbytes = st.get("bytes", size.get(key, b["sparse_int8"]))
        if key not in names:   # low-bit and mixed stages
            names[key] = (f"ticket mixed PTQ (Q-BERT, mean {st['mean_bits']:.2f} bits)" if key == "ticket_mixed_ptq"
                          else f"ticket int{st['bits']} PTQ")
            names[key] += f", groups of {st['group_size']}" if st.get("group_size") else ", per channel"
        acc = f"{100 * st['test_accuracy']:.2f}" + (f" ± {100 * st['test_accuracy_std']:.2f}"
                                                      if st.get("test_accuracy_std") else "")
        lines.append(f"| {names[key]} | {acc} | {nbytes:,.0f} | {b['dense_f32'] / nbytes:.1f}× |")
    if result.get("physical"):
        lines += ["", "physical stages (parameters removed against the dense model; speed measured on this machine):",
                  "",
                  compress_stages.table(result["physical"])]
    return "\n".join(lines)
