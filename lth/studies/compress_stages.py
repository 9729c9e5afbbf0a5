"""`lth compress`'s physical stages: the ticket made smaller in its arrays, not only in its zeros, and
every stage's measured inference speed.

- `compress.heads` / `compress.mlps` (BERT): that fraction of the attention heads / MLPs switched off
  by gate importance, greedily in steps of `heads.step` as `lth heads` does (Michel et al. 2019).
- `compress.shrink`: the ticket with its dead units and switched-off heads / MLPs removed
  (lth.shrink); its outputs equal the masked model's. A BERT is also exported as an HF checkpoint
  (`ticket_shrunk/replicate_<r>/`: config.json with `pruned_heads`, model.safetensors).
- `compress.layers` (BERT): whole layers removed at inference (Fan et al. 2020's pruning of a model
  trained with LayerDrop, `model.layerdrop`): `every_other` keeps layers 0, 2, 4, … (their "every
  other" strategy), or a comma list of the layers kept; applied to the (shrunk) ticket, physically.
- `compress.factorize` (a regex of 2-D kernels / embeddings) with `compress.rank` or `compress.energy`:
  truncated-SVD factors of the (shrunk) ticket (lth.factorize), fine-tuned for `compress.finetune`
  through the one training loop (one arm per replicate, resumable).
- int8 PTQ (qwix, as the ticket's) of the masked ticket and of the shrunk model.
- `compress.speed`: parameters, bytes, CPU latency at batch 1 and throughput at batch 64 (lth.speed;
  replicate 0, `compress.speed_repeats` timed calls) of every stage, dense f32 measured beside them.

Physical stages are per replicate (each replicate's ticket shrinks to its own shapes).
"""
from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lth.compression import factorize as F
from lth.compression import quantize as Q
from lth.compression import shrink, speed
from lth.errors import UserError
from lth.harness.run import train_arm
from lth.harness.trainer import trainer_from_config
from lth.models.bert import drop_layers
from lth.models.bert_import import save_pretrained
from lth.options import options
from lth.pruning import masks as M
from lth.studies import heads
from lth.training.loop import device_data

# The physical stages' fields of the `compress` section.
OPTIONS = options(
    heads=(0.0, "BERT: fraction of attention heads switched off by importance (then shrunk)"),
    mlps=(0.0, "BERT: fraction of layer MLPs switched off by importance"),
    shrink=(False, "remove dead units / off heads and MLPs from the arrays (lth.shrink)"),
    layers=("", "BERT: layers kept at inference (the rest removed): every_other | a comma list of layer indices "
                "('' = all)"),
    factorize=("", "regex of 2-D kernels / embeddings to replace by truncated-SVD factors"),
    rank=(0, "their rank (at most min(in, out)) ..."),
    energy=(0.0, "... or the fraction of Σσ² kept, 0 < energy <= 1 (per layer)"),
    finetune=("0it", "fine-tuning of the factorized model (train.* recipe otherwise)"),
    speed=(False, "time every stage: latency at batch 1, throughput at batch 64 (CPU/GPU)"),
    speed_repeats=(10, "timed calls per measurement (median, after 2 warm-up calls)"),
)


def enabled(cfg) -> bool:
    c = cfg.compress
    return bool(c.shrink or c.factorize or c.speed or c.heads or c.mlps or c.get("layers", ""))


def shrinking(cfg) -> bool:
    """Heads or MLPs switched off are only ever shipped removed: they imply compress.shrink."""
    c = cfg.compress
    return bool(c.shrink or c.heads or c.mlps)


def validate(cfg) -> None:
    c = cfg.compress
    for name in ("heads", "mlps"):
        if not 0 <= c[name] < 1:
            raise UserError(f"compress.{name} {c[name]} out of range; "
                            f"allowed: 0 <= fraction < 1 (of the model's {name})")
    if c.energy:
        F.check_energy(c.energy)
    if c.rank < 0:
        raise UserError(f"compress.rank {c.rank} out of range; allowed: 1 or more (0: use compress.energy)")
    if c.factorize:
        M.check_pattern("compress.factorize", c.factorize)
    if c.factorize and not (c.rank or c.energy):
        raise UserError(f"compress.factorize {c.factorize!r} needs compress.rank or compress.energy; "
                        f"allowed: one of them set")
    if c.speed_repeats < 1:
        raise UserError(f"compress.speed_repeats {c.speed_repeats} out of range; allowed: 1 or more")


def kept_layers(spec: str, model) -> list[int] | None:
    """The layers `compress.layers` keeps, or None ('' = all); checked against the model."""
    if not spec:
        return None
    cfg = getattr(model, "cfg", None)
    if not hasattr(cfg, "layer_heads"):
        raise UserError(f"compress.layers {spec!r} needs a BERT model; allowed: '' for other models")
    if spec == "every_other":
        return list(range(0, cfg.layers, 2))
    try:
        kept = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        kept = []
    if not kept or len(set(kept)) != len(kept) or not all(0 <= i < cfg.layers for i in kept):
        raise UserError(f"compress.layers {spec!r}: allowed: every_other, or distinct layer indices in "
                        f"0..{cfg.layers - 1} (the layers kept)")
    return sorted(kept)


@dataclasses.dataclass
class Plan:
    """Per replicate: the shrunk model and the factorization ranks (all checked), and the level's
    final state they came from (loaded once); the layers kept (compress.layers)."""
    final: object
    shrunk: list
    ranks: list
    layers: list | None = None


def gates(s, state, log=print):
    """(head gates [R, L, A], mlp gates [R, L]) with compress.heads / .mlps of them off, or (None, None)."""
    c = s.cfg.compress
    if not (c.heads or c.mlps):
        return None, None
    try:
        layers, per_layer = heads.check(s)
    except UserError as e:   # name the keys that asked for heads
        raise UserError(f"compress.heads {c.heads} / compress.mlps {c.mlps}: {e}") from None
    n = min(s.cfg.heads.examples, len(s.dataset.y_train))
    split = s.trainer.chunked(s.dataset.x_train[:n], s.dataset.y_train[:n])
    g = {"heads": np.ones((s.replicates, layers, per_layer)), "mlps": np.ones((s.replicates, layers))}
    for kind, frac in (("heads", c.heads), ("mlps", c.mlps)):
        total = g[kind][0].size
        target, per = int(round(frac * total)), max(1, int(round(s.cfg.heads.step * total)))
        removed = 0
        while removed < target:
            ih, im = heads.importance(s, state, split, g["heads"], g["mlps"])
            k = min(per, target - removed)
            g[kind] = heads.remove_lowest(g[kind], ih if kind == "heads" else im, k)
            removed += k
        if target:
            log(f"{kind}: {target} of {total} switched off by importance")
    return g["heads"], g["mlps"]


def plan(s, final, head_gates=None, mlp_gates=None) -> Plan:
    """Shrink and factorization plan of every replicate; the bad-input errors (a layer left empty, a
    rank above a layer's size) come from here, before anything is written."""
    c = s.cfg.compress
    model = s.trainer.model
    kept = kept_layers(c.get("layers", ""), model)
    shrunk, ranks = [], []
    for r in range(s.replicates):
        p, m = M.index(final.params, r), M.index(final.masks, r)
        hg = None if head_gates is None else head_gates[r]
        mg = None if mlp_gates is None else mlp_gates[r]
        sh = shrink.shrink(model, p, m, hg, mg) if shrinking(s.cfg) else None
        shrunk.append(sh)
        base_model, base = (sh.model, sh.params) if sh is not None else (model, M.apply(p, m))
        if kept is not None:
            base_model, base = drop_layers(base_model, base, kept)
        ranks.append(F.plan(base, c.factorize, c.rank, c.energy) if c.factorize else None)
    return Plan(final, shrunk, ranks, kept)


@functools.lru_cache(maxsize=None)
def _forward(model):
    """The eval forward pass of `model`, one function per model (speed.accuracy compiles it once)."""
    return lambda v, xb: model.apply(v, xb, train=False)


def _nonzero(params) -> int:
    return int(sum(np.count_nonzero(np.asarray(x)) for x in jax.tree.leaves(params)))


def _nonzero_masks(params, prunable_pattern):
    """(masks, prunable) of physical params: the prunable kernels' zeros are their pruned weights."""
    pr = M.prunable_tree(params, prunable_pattern)
    return jax.tree.map(lambda x, p: np.asarray(x) != 0 if p else np.ones(np.shape(x), bool), params, pr), pr


def _bytes(params, model_state, prunable_pattern, quantized=None) -> dict:
    """f32 / int8 bytes of physical params, zeros of the prunable kernels stored sparse (lth.quantize)."""
    masks, pr = _nonzero_masks(params, prunable_pattern)
    return Q.sizes(params, masks, pr, quantized or {}, model_state)


def _finetune(s, out_dir, r, model, params, model_state, log):
    """Fine-tune one replicate's physical model for compress.finetune (the run's recipe otherwise)."""

    cfg = ml_collections.ConfigDict(s.cfg.to_dict())
    cfg.replicates, cfg.seed = 1, s.cfg.seed + r     # replicate r's own key streams (lth.run.keys)
    cfg.train.duration = cfg.compress.finetune
    trainer = trainer_from_config(model, cfg.train, len(s.dataset.y_train), augment=s.trainer.augment,
                                  replicates="vmap")
    total = s.duration(cfg.compress.finetune, "compress.finetune")
    s1 = dataclasses.replace(s, cfg=cfg, trainer=trainer, total=total, eval_every=total,
                             checkpoint_every=s.checkpoint_every, _scorers={}, teacher=None)
    masks, _ = _nonzero_masks(params, s.cfg.prune.prunable)   # the ticket's zeros stay zero
    stack = lambda t: jax.tree.map(lambda a: jnp.asarray(a)[None], t)  # noqa: E731
    state, _ = train_arm(s1, os.path.join(out_dir, "factorized_ft", f"replicate_{r}"), stack(params),
                         stack(model_state), stack(masks), 0, device_data(trainer, s.dataset), label=f"fine-tune r{r}")
    return jax.tree.map(lambda a: np.asarray(a[0]), state.params)


def run(s, final, dense, plan_: Plan, out_dir: str, quantizer_for, calib, log=print) -> dict:
    """Stages {name: {test_accuracy(_std), replicates, params, nonzero, bytes[, timing, speed-ups]}}."""
    c = s.cfg.compress
    ds = s.dataset
    x, y = ds.x_test, ds.y_test
    model = s.trainer.model
    pat = s.cfg.prune.prunable
    reps = range(s.replicates)
    stages, timed = {}, {}

    def stage(name, fwd_of, vars_of, f32_params_of=None, quantized_of=None):
        """One stage: accuracy of every replicate, sizes and (later) speed of replicate 0."""
        accs = [speed.accuracy(fwd_of(r), vars_of(r), x, y) for r in reps]
        v0 = vars_of(0)
        p0 = f32_params_of(0) if f32_params_of else v0["params"]
        q0 = quantized_of(0) if quantized_of else None
        b = _bytes(p0, {k: w for k, w in v0.items() if k != "params"}, pat, q0)
        stages[name] = {"test_accuracy": float(np.mean(accs)), "test_accuracy_std": float(np.std(accs)),
                        "replicates": accs, "params": M.num_params(p0), "nonzero": _nonzero(p0),
                        "bytes": b["sparse_int8"] if q0 else b["sparse_f32"]}
        timed[name] = (fwd_of(0), v0)
        log(f"{name}: accuracy {100 * np.mean(accs):.2f}, {stages[name]['params']:,} params")

    ms = lambda r: M.index(final.model_state, r)  # noqa: E731
    ticket = [M.apply(M.index(final.params, r), M.index(final.masks, r)) for r in reps]   # masked once
    fwd = _forward(model)
    if dense is not None:
        stage("dense_f32", lambda r: fwd,
              lambda r: {"params": M.index(dense.params, r), **M.index(dense.model_state, r)})
    stage("ticket_f32", lambda r: fwd, lambda r: {"params": ticket[r], **ms(r)})
    q = quantizer_for(model)
    qt = [q(ticket[r], ms(r), calib) for r in reps]
    stage("ticket_int8", lambda r: _forward(q.ptq), lambda r: {"params": qt[r], **ms(r)},
          lambda r: ticket[r], lambda r: Q.quantized_leaves(qt[r]))
    if shrinking(s.cfg):
        sh = plan_.shrunk
        stage("ticket_shrunk", lambda r: _forward(sh[r].model), lambda r: {"params": sh[r].params, **ms(r)})
        stages["ticket_shrunk"]["units"] = {k: list(v) for k, v in sh[0].units.items()}
        if hasattr(getattr(sh[0].model, "cfg", None), "layer_heads"):   # a BERT: exported as an HF checkpoint
            for r in reps:
                save_pretrained(os.path.join(out_dir, "ticket_shrunk", f"replicate_{r}"), sh[r].params, sh[r].model.cfg)
        qz = [quantizer_for(sh[r].model) for r in reps]
        qp = [qz[r](sh[r].params, ms(r), calib) for r in reps]
        stage("ticket_shrunk_int8", lambda r: _forward(qz[r].ptq), lambda r: {"params": qp[r], **ms(r)},
              lambda r: sh[r].params, lambda r: Q.quantized_leaves(qp[r]))
        physical = [(sh[r].model, sh[r].params) for r in reps]
    else:
        physical = [(model, ticket[r]) for r in reps]
    if plan_.layers is not None:   # whole layers removed (LayerDrop's pruning at inference)
        physical = [drop_layers(*physical[r], plan_.layers) for r in reps]
        stage("layers_dropped", lambda r: _forward(physical[r][0]), lambda r: {"params": physical[r][1], **ms(r)})
        stages["layers_dropped"]["layers"] = plan_.layers
        for r in reps:
            save_pretrained(os.path.join(out_dir, "layers_dropped", f"replicate_{r}"), physical[r][1],
                            physical[r][0].cfg)
    if c.factorize:
        lr = [F.low_rank(physical[r][0], plan_.ranks[r]) for r in reps]
        fp = [F.factorize(physical[r][1], plan_.ranks[r]) for r in reps]
        stage("factorized", lambda r: _forward(lr[r]), lambda r: {"params": fp[r], **ms(r)})
        stages["factorized"]["ranks"] = plan_.ranks[0]
        if s.duration(c.finetune, "compress.finetune") > 0:
            ft = [_finetune(s, out_dir, r, lr[r], fp[r], ms(r), log) for r in reps]
            stage("factorized_ft", lambda r: _forward(lr[r]), lambda r: {"params": ft[r], **ms(r)})
    if c.speed:
        log(f"timing {len(timed)} stages side by side (batch 1 and 64, {c.speed_repeats}+ calls each)")
        for name, t in speed.compare(timed, np.asarray(x[:64]), c.speed_repeats).items():
            stages[name].update(t)
        base = stages.get("dense_f32")
        for row in stages.values() if base else ():
            row["speedup_b1"] = base["latency_ms_b1"] / row["latency_ms_b1"]
            row["speedup_b64"] = row["throughput_b64"] / base["throughput_b64"]
    return stages


NAMES = {"dense_f32": "dense f32 (level 0)", "ticket_f32": "ticket f32, masked",
         "ticket_int8": "ticket int8 PTQ, masked",
         "ticket_shrunk": "ticket shrunk",
         "ticket_shrunk_int8": "ticket shrunk, int8 PTQ", "layers_dropped": "layers removed (LayerDrop)",
         "factorized": "factorized (SVD)",
         "factorized_ft": "factorized, fine-tuned"}


def table(stages: dict) -> str:
    """Markdown: accuracy, parameters (removed vs dense), bytes, latency / throughput and speed-ups."""
    timed = any("latency_ms_b1" in r for r in stages.values())
    head = "| stage | test accuracy | params | removed | nonzero | bytes |"
    head += " latency b1 (ms) | speed-up b1 | throughput b64 (ex/s) | speed-up b64 |" if timed else ""
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    n0 = next(iter(stages.values()))["params"]   # the first stage: dense (or the ticket's own arrays)
    for key, r in stages.items():
        acc = f"{100 * r['test_accuracy']:.2f}" + (f" ± {100 * r['test_accuracy_std']:.2f}"
                                                     if r.get("test_accuracy_std") else "")
        line = (f"| {NAMES.get(key, key)} | {acc} | {r['params']:,} | {100 * (1 - r['nonzero'] / n0):.1f}% | "
                f"{r['nonzero']:,} | {r['bytes']:,.0f} |")
        if timed:
            line += (f" {r['latency_ms_b1']:.2f} | {r.get('speedup_b1', float('nan')):.2f}× | "
                     f"{r['throughput_b64']:,.0f} | {r.get('speedup_b64', float('nan')):.2f}× |")
        lines.append(line)
    return "\n".join(lines)
