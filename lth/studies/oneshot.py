"""`lth oneshot`: post-training pruning of a trained network. The network is a finished level of an
`lth lottery` run (level 0: the dense network, or a BERT fine-tuned from `model.pretrained`). Each
one-shot method (lth/surgeons: magnitude, Wanda, SparseGPT) prunes it at each target: unstructured
sparsities and N:M patterns. The calibration inputs are the first `oneshot.calibration` training
examples. Each pruned network's test accuracy is measured before and after a short recovery
fine-tune through the one training loop (`oneshot.recovery`; its pruned weights stay 0).

Run layout: <run>/oneshot/level_<L>-<hash of oneshot.*>/results.json, and arms/<method>-<target>/ for
each recovery fine-tune (resumable like every arm).
"""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from lth.compression.quantize import model_bytes
from lth.compression.sparse_exec import nm_speed
from lth.errors import UserError, check_choice
from lth.harness import paths
from lth.harness.run import BASE_SECTIONS, Command, setup, train_arm
from lth.harness.rundir import read_json, write_json
from lth.options import options, split_list
from lth.pruning import masks as M
from lth.studies import plots
from lth.studies.compress import finished_run_config, load_level
from lth.surgeons import layer as L
from lth.surgeons.model import METHODS, check, prune_oneshot
from lth.training.loop import device_data

OPTIONS = {"oneshot": options(
    methods=("magnitude,wanda,sparsegpt", "comma list of one-shot methods: magnitude | wanda | sparsegpt | obs "
                                          "(OBS with its update: WoodFisher / oBERT) | obs_noupdate | obd"),
    scope=("layer", "layer (each layer at the sparsity) | global (one ranking): magnitude, obs, obs_noupdate, obd; "
                    "wanda and sparsegpt always prune each layer"),
    sparsities=("0.5,0.7,0.9", "comma list of unstructured targets: the fraction of each layer pruned"),
    patterns=("2:4,4:8", "comma list of N:M targets (N kept of every M consecutive inputs; '' = none)"),
    calibration=(128, "calibration examples (the first of the training set; a sequence is one)"),
    recovery=("0it", "recovery fine-tune after pruning (duration; 0 = none), at oneshot.recovery_lr"),
    recovery_lr=(0.0, "recovery learning rate, constant (0 = train.lr / 10)"),
    blocksize=(128, "SparseGPT's lazy block of columns (a multiple of every N:M pattern's M)"),
    percdamp=(0.01, "SparseGPT's damping: this fraction of the mean diagonal of H is added to it"),
    fisher_block=(50, "OBS: the empirical Fisher's block of B consecutive weights (oBERT: 50; at most a layer's "
                      "size, the last block padded)"),
    damp=(1e-7, "OBS: the Fisher's dampening λ (F = λI + 1/m Σ ggᵀ; sparseml's default)"),
    grad_batch=(8, "OBS: calibration examples per gradient (m = calibration / grad_batch gradients)"),
    steps=(1, "pruning steps to each unstructured target: 1 = one-shot; K > 1 = gradual (oBERT): step k prunes to "
              "s·(1 − (1 − k/K)³), each step but the last followed by oneshot.interval of fine-tuning"),
    speed=(True, "time the network's prunable Dense kernels at batch 64 as dense and N:M compressed matmuls, for "
                 "each N:M target (lth.compression.sparse_exec.nm_speed; there are no N:M kernels on CPU)"),
    interval=("1ep", "gradual: the fine-tuning after each pruning step, its learning rate rewound to "
                     "oneshot.recovery_lr and decayed linearly to 0 (oBERT's learning-rate rewinds)"),
)}

HELP = "one-shot pruning of a trained level: magnitude, Wanda, SparseGPT at sparsities and N:M, with recovery"
DESCRIPTION = ("Prune a finished level of an `lth lottery` run after training (level 0 by default: the dense "
               "network) with each one-shot method (oneshot.methods) at each target (oneshot.sparsities, "
               "oneshot.patterns), calibrated on oneshot.calibration training examples; report test accuracy "
               "before and after a recovery fine-tune (oneshot.recovery).")
FROM_RUN = True
RESULT_FILE = "results.json"
PLOT_FILE = "oneshot.png"
SETTABLE = ("oneshot.", "run.")   # what --set may change on a finished run


def targets(cfg) -> list[tuple[str, float, str]]:
    """[(name, sparsity, pattern)]: the unstructured sparsities, then the N:M patterns."""
    out = []
    for v in split_list(cfg.oneshot.sparsities):
        try:
            sp = float(v)
        except ValueError:
            sp = float("nan")
        if not 0.0 < sp < 1.0:
            raise UserError(f"oneshot.sparsities {v!r}: allowed: numbers strictly between 0 and 1")
        out.append((f"{sp:g}", sp, ""))
    for v in split_list(cfg.oneshot.patterns):
        nm = L.parse_pattern(v)
        out.append((f"{nm[0]}:{nm[1]}", 0.5, v))
    if not out:
        raise UserError("oneshot.sparsities and oneshot.patterns are both empty; allowed: at least one target")
    return out


def validate(cfg) -> None:
    o = cfg.oneshot
    for m in split_list(o.methods) or [""]:
        check_choice("oneshot.methods entry", m, METHODS)
    targets(cfg)
    if o.calibration < 1:
        raise UserError(f"oneshot.calibration {o.calibration} out of range; allowed: 1 or more examples")
    if o.blocksize < 1:
        raise UserError(f"oneshot.blocksize {o.blocksize} out of range; allowed: 1 or more columns")
    if not 0.0 <= o.percdamp < 1.0:
        raise UserError(f"oneshot.percdamp {o.percdamp} out of range; allowed: 0 <= percdamp < 1")
    if not 1 <= o.steps <= 1000:
        raise UserError(f"oneshot.steps {o.steps} out of range; allowed: 1 (one-shot) to 1000 pruning steps")
    if o.grad_batch < 1:
        raise UserError(f"oneshot.grad_batch {o.grad_batch} out of range; allowed: 1 or more examples")
    if any(m.startswith("obs") for m in split_list(o.methods)) and o.calibration < o.grad_batch:
        raise UserError(f"oneshot.calibration {o.calibration} < oneshot.grad_batch {o.grad_batch}: no gradient for "
                        f"OBS; allowed: calibration >= grad_batch")
    if not (o.damp > 0.0):
        raise UserError(f"oneshot.damp {o.damp} out of range; allowed: a dampening > 0")
    if not (o.recovery_lr >= 0.0):
        raise UserError(f"oneshot.recovery_lr {o.recovery_lr} out of range; allowed: 0 (train.lr / 10) or a rate > 0")


COMMAND = Command("oneshot", BASE_SECTIONS + ("prune", "lottery", "oneshot"), validate=validate)
RESULTS = Command("oneshot_results", ("oneshot",))   # the results directory's identity


@dataclasses.dataclass
class Job:
    setup: object
    run_dir: str
    level: int

    @property
    def cfg(self):
        return self.setup.cfg


def from_run(run_dir: str, overrides=(), level: int | None = None, progress: bool = True):
    """(job, results dir): every check done before anything is written; level defaults to 0."""
    cfg = finished_run_config(run_dir, overrides, SETTABLE, progress)
    level = 0 if level is None else level
    if level not in paths.finished_levels(run_dir):
        raise UserError(f"level {level} is not a finished level of {run_dir}; allowed: "
                        f"{', '.join(map(str, paths.finished_levels(run_dir))) or 'none (run `lth lottery` first)'}")
    s = setup(cfg, COMMAND)
    s.duration(cfg.oneshot.recovery, "oneshot.recovery")
    if cfg.oneshot.steps > 1 and s.duration(cfg.oneshot.interval, "oneshot.interval") < 1:
        raise UserError(f"oneshot.interval {cfg.oneshot.interval!r} is no step; allowed: a fine-tuning of at least "
                        f"one step between gradual pruning steps")
    shapes = s.param_shapes
    kernels = {p: leaf for p, leaf, on in zip(M.leaf_paths(shapes), jax.tree.leaves(shapes),
                                              jax.tree.leaves(s.prunable)) if on}
    for method in split_list(cfg.oneshot.methods):
        for _, sp, pattern in targets(cfg):
            check(method, sp, L.parse_pattern(pattern), kernels, True, cfg.oneshot.blocksize,
                  cfg.oneshot.fisher_block, cfg.oneshot.scope)
    out = RESULTS.dir_for(os.path.join(run_dir, "oneshot"), f"level_{level}", cfg)
    return Job(s, run_dir, level), out


def recovery_setup(s):
    """A Setup whose trainer fine-tunes for oneshot.recovery at a constant oneshot.recovery_lr."""
    cfg = s.cfg
    return s.finetuning(s.trainer.model, cfg.oneshot.recovery, cfg.oneshot.recovery_lr or cfg.train.lr / 10,
                        "oneshot.recovery")


def interval_setup(s):
    """A Setup whose trainer fine-tunes for oneshot.interval from oneshot.recovery_lr, decayed linearly to 0."""
    cfg = s.cfg
    return s.finetuning(s.trainer.model, cfg.oneshot.interval, cfg.oneshot.recovery_lr or cfg.train.lr / 10,
                        "oneshot.interval", schedule="linear")


def nm_speed_of(s, patterns) -> dict:
    """Summed over the prunable Dense kernels (in network order): dense vs N:M compressed matmul at batch 64
    (median ms per call), per pattern; kernels whose input dimension M does not divide are skipped."""
    shapes = dict(zip(M.leaf_paths(s.param_shapes), (tuple(x.shape) for x in jax.tree.leaves(s.param_shapes))))
    kernels = [shapes[p] for p in s.prunable_order if len(shapes[p]) == 2]
    out = {}
    for n, m in patterns:
        rows = nm_speed(shapes=sorted(set(kernels)), patterns=((n, m),), batches=(64,), repeats=10)["rows"]
        per = {tuple(r["shape"]): r for r in rows}
        dense = sum(per[k]["dense_ms"] for k in kernels if k in per)
        nm = sum(per[k]["nm_ms"] for k in kernels if k in per)
        out[f"{n}:{m}"] = {"dense_ms": dense, "nm_ms": nm, "ratio": nm / dense if dense else None, "batch": 64,
                           "kernels": sum(1 for k in kernels if k in per)}
    return out


def gradual_sparsities(final: float, steps: int) -> list[float]:
    """The cubic schedule (Zhu & Gupta; oBERT): step k of K prunes to final · (1 − (1 − k/K)³)."""
    return [final * (1.0 - (1.0 - k / steps) ** 3) for k in range(1, steps + 1)]


def run(job: Job, out_dir: str, log=print) -> dict:
    s, cfg = job.setup, job.cfg
    t, ds = s.trainer, s.dataset
    final = load_level(s, job.run_dir, job.level)
    data = device_data(t, ds)
    calib = np.asarray(ds.x_train[:cfg.oneshot.calibration])
    apply_fn = lambda v, x: t.model.apply(v, x, train=False)  # noqa: E731
    before = [float(a) for a in np.asarray(t.evaluate(final, data.test)[1])]
    path = os.path.join(out_dir, RESULT_FILE)
    result = read_json(path, redo=out_dir) if os.path.exists(path) else {}
    result.update(run_dir=job.run_dir, level=job.level, calibration=int(len(calib)),
                  density=float(np.mean(M.density(final.masks, s.prunable, axis=0)[0])),
                  trained={"test_accuracy": float(np.mean(before)), "replicates": before})
    rows = {(r["method"], r["target"]): r for r in result.get("rows", [])}
    result["dense_bytes_f32"] = model_bytes(M.index(final.params, 0), None, s.prunable,
                                            M.index(final.model_state, 0))["dense_f32"]
    patterns = [L.parse_pattern(p) for _, _, p in targets(cfg) if p]
    if cfg.oneshot.speed and patterns and "nm_speed" not in result:
        result["nm_speed"] = nm_speed_of(s, patterns)
    rs = recovery_setup(s) if s.duration(cfg.oneshot.recovery, "oneshot.recovery") > 0 else None
    log(f"level {job.level}: test accuracy {np.mean(before):.4f}; calibration {len(calib)} examples")
    m = len(calib) // cfg.oneshot.grad_batch
    if any(x.startswith("obs") for x in split_list(cfg.oneshot.methods)) and m < cfg.oneshot.fisher_block:
        log(f"note: OBS from m = {m} gradients in Fisher blocks of {cfg.oneshot.fisher_block}: each block's Fisher has "
            f"rank <= {m}, so its inverse is ~1/damp off that span and the scores rank little but the gradients' "
            f"scale (oBERT uses m = 1024); raise oneshot.calibration or lower oneshot.fisher_block")
    for method in split_list(cfg.oneshot.methods):
        for name, sp, pattern in targets(cfg):
            if (method, name) in rows and (rs is None or "recovered_accuracy" in rows[(method, name)]):
                continue
            label = f"{method}-{name.replace(':', 'of')}"
            steps = cfg.oneshot.steps if not pattern else 1   # N:M targets are reached in one step
            state = final
            for k, sk in enumerate(gradual_sparsities(sp, steps) if steps > 1 else [sp], start=1):
                if k > 1:   # fine-tune between steps, the learning rate rewound (oBERT)
                    state, _ = train_arm(interval_setup(s), os.path.join(out_dir, "arms", f"{label}-step{k - 1}"),
                                         state.params, final.model_state, state.masks, 0, data,
                                         label=f"{method} {name} step {k - 1}")
                    state = final.replace(params=state.params, masks=state.masks)
                off = (k - 1) * len(calib) % max(1, len(ds.y_train) - len(calib) + 1)   # fresh examples each step
                xs, ys = np.asarray(ds.x_train[off:off + len(calib)]), np.asarray(ds.y_train[off:off + len(calib)])
                pruned = []
                for r in range(s.replicates):
                    v = {"params": M.index(state.params, r), **M.index(final.model_state, r)}
                    pruned.append(prune_oneshot(apply_fn, v, method, sparsity=sk, pattern=pattern, x=xs,
                                                prunable=s.prunable, masks=M.index(state.masks, r),
                                                blocksize=cfg.oneshot.blocksize, percdamp=cfg.oneshot.percdamp,
                                                y=ys, scope=cfg.oneshot.scope, fisher_block=cfg.oneshot.fisher_block,
                                                damp=cfg.oneshot.damp, grad_batch=cfg.oneshot.grad_batch,
                                                rng=jax.random.key(r)))
                params, masks = M.stack([p for p, _ in pruned]), M.stack([q for _, q in pruned])
                state = final.replace(params=M.apply(params, masks), masks=masks)
            accs = [float(a) for a in np.asarray(t.evaluate(state, data.test)[1])]
            size = model_bytes(M.index(state.params, 0), M.index(masks, 0), s.prunable,
                               M.index(final.model_state, 0))
            row = {"method": method, "target": name, "pattern": pattern or "unstructured", "steps": steps,
                   "bytes_f32": size["sparse_f32"], "bytes_int8": size["sparse_int8"],
                   "density": float(np.mean(M.density(masks, s.prunable, axis=0)[0])),
                   "test_accuracy": float(np.mean(accs)), "test_accuracy_std": float(np.std(accs)), "replicates": accs}
            if rs is not None:
                _, out = train_arm(rs, os.path.join(out_dir, "arms", label),
                                   state.params, final.model_state, masks, 0, data, label=f"{method} {name}")
                rec = [o["test_accuracy"] for o in out]
                row.update(recovered_accuracy=float(np.mean(rec)), recovered_accuracy_std=float(np.std(rec)),
                           recovered_replicates=rec)
            rows[(method, name)] = row
            log(f"{method:<10} {name:<5} density {row['density']:.4f}  test acc {row['test_accuracy']:.4f}"
                + (f"  after recovery {row['recovered_accuracy']:.4f}" if rs is not None else ""))
            result["rows"] = list(rows.values())
            write_json(path, result)
    result["rows"] = list(rows.values())
    write_json(path, result)
    return result


def describe(job: Job) -> str:
    s = job.setup
    return f"level {job.level} of {job.run_dir}: {s.cfg.model.name} on {s.cfg.data.name}, R={s.replicates}"


def files(result) -> list:
    return [f"results: {os.path.join(result.run_dir, RESULT_FILE)}", f"plot: {result.plot()}"]


def plot(result: dict, path: str) -> str:
    return plots.oneshot_accuracy(result, path)


def table(result) -> str:
    rec = any("recovered_accuracy" in r for r in result.get("rows", []))
    tr = result["trained"]["test_accuracy"]
    dense = result.get("dense_bytes_f32")
    lines = [f"level {result['level']}: trained test accuracy {100 * tr:.2f}%, density "
             f"{100 * result['density']:.2f}%; calibration {result['calibration']} examples"
             + (f"; dense float32 {dense:,} bytes" if dense else ""), "",
             "| method | target | density % | test accuracy % |" + (" after recovery % |" if rec else "")
             + " bytes f32 | × smaller |",
             "|---|---|---|---|" + ("---|" if rec else "") + "---|---|"]
    for r in result.get("rows", []):
        steps = f" ({r['steps']} steps)" if r.get("steps", 1) > 1 else ""
        line = f"| {r['method']}{steps} | {r['target']} | {100 * r['density']:.2f} | {100 * r['test_accuracy']:.2f} |"
        if rec:
            line += f" {100 * r['recovered_accuracy']:.2f} |" if "recovered_accuracy" in r else " |"
        b = r.get("bytes_f32")
        line += f" {b:,} | {dense / b:.2f}× |" if b and dense else " | |"
        lines.append(line)
    for pat, t in result.get("nm_speed", {}).items():
        lines.append(f"\n{pat} as a compressed N:M matmul (values + indices; no N:M kernels on this CPU), the "
                     f"{t['kernels']} Dense kernels at batch {t['batch']}: {t['nm_ms']:.3f} ms vs dense "
                     f"{t['dense_ms']:.3f} ms ({t['ratio']:.2f}× dense's time)")
    return "\n".join(lines)
