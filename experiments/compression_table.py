"""The README's Compression tables: every family of compression on one model, in the format of
Gordon's survey of BERT compression (parameters removed, measured speed-up, accuracy).

    python experiments/compression_table.py mnist1d    # the demo MLP (after `make demo`), ~2 min on 2 cores
    python experiments/compression_table.py minilm --run-dir RUN   # MiniLM-L6 on BBC News, ~40 min on 2 cores
    python experiments/compression_table.py minilm --run-dir RUN --survey   # + every family below, hours on 2 cores

mnist1d: `lth compress` on the demo run (runs/mnist1d_mlp-*; its IMP ticket masked, shrunk and int8;
its dense level factorized by SVD at 90% energy and fine-tuned 2 epochs) and on a structured IMP
run of the same config (whole neurons, layerwise L1 — Li et al. 2017 — 5 levels, shrunk).

minilm: RUN is a finished `lth lottery --config configs/bert_minilm_bbc.py` run (level 0 is the
fine-tuned dense model). `lth compress` on level 0 with half of the heads removed by importance
(Michel et al.) and shrunk, with the FFN kernels and the word embedding factorized at rank 128
(ALBERT's E = 128) and fine-tuned one epoch, and with both; and an ALBERT-style model (6 layers in 3
groups of shared weights, from the pretrained layers 0, 2, 4) distilled from level 0 for 3 epochs.

--survey adds the rest of Gordon's families, each from its own runs (reused when done): int4 and
Q-BERT mixed 8/4/2-bit weights (bytes, no CPU kernels: no speed); LayerDrop (a fine-tune with
model.layerdrop=0.2, every other layer removed at inference); a 3-layer student (MiniLM's layers 0,
2, 4) distilled from level 0 by logits, Patient KD and TinyBERT's intermediate layers; and magnitude
pruning at 50 / 70 %, task-agnostic vs downstream: one-shot magnitude tickets of the MLM-trained
network (runs/bert_mlm) and of RUN's fine-tuned level 0, beside the pretrained weights' magnitude and
a random mask, each fine-tuned on BBC News from the pretrained weights (`lth transfer`, the arms of
docs/pages/results.md's transfer table when RUN is its runs/bert_bbc).

Each row prints the command that made it. Speed-ups are against dense f32 measured in the same
command (side by side, interleaved), latency at batch 1 and throughput at batch 64, CPU.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

import lth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FACT_BERT = r"layer_\d+/(intermediate|output)/kernel|word/embedding"
# the MLM source of the task-agnostic tickets (docs/pages/results.md, "Pre-training vs downstream")
MLM_SETS = ["lottery.levels=0", "lottery.controls=", "train.duration=300it", "train.eval_every=150it", "train.lr=1e-4"]


COMMANDS: dict = {}   # command → its letter in the table
DENSE: dict = {}      # minilm's dense f32 stage, measured in its first command


def row(name, st, dense, command, family=None) -> str:
    removed = 100 * (1 - st["nonzero"] / dense["nonzero"])
    acc = f"{100 * st['test_accuracy']:.2f}" + (f" ± {100 * st['test_accuracy_std']:.2f}"
                                                  if st.get("test_accuracy_std") else "")
    sp = (f"{st['speedup_b1']:.2f}× | {st['speedup_b64']:.2f}×" if "speedup_b1" in st else "- | -")
    key = COMMANDS.setdefault(command, chr(ord("A") + len(COMMANDS)))
    fam = "" if family is None else f"| {family} "
    return f"{fam}| {name} | {st['params']:,} | {removed:.1f}% | {sp} | {acc} | {key} |"


def compress(run_dir, level, sets):
    res = lth.compress(run_dir, level, sets + ["compress.speed=true", "compress.speed_repeats=5"], log=print)
    cmd = f"lth compress --run-dir {os.path.relpath(run_dir, ROOT)} --level {level} " + " ".join(
        f"--set '{s}'" for s in sets + ["compress.speed=true"])
    return res.summary["physical"], cmd


HEAD = ["| model | params | removed | speed-up b1 | speed-up b64 | test accuracy % | command |",
        "|---|---|---|---|---|---|---|"]
FAMILY_HEAD = ["| family " + HEAD[0], "|---" + HEAD[1]]   # minilm: Gordon's families


def mnist1d(a) -> list[str]:
    run = a.run_dir or sorted(glob.glob(os.path.join(ROOT, "runs", "mnist1d_mlp-eaedf3235b")))[0]
    imp, c1 = compress(run, 11, ["compress.shrink=true"])
    fact, c2 = compress(run, 0, [r"compress.factorize=fc_\d/kernel", "compress.energy=0.9", "compress.finetune=2ep"])
    units = lth.lottery("mnist1d_mlp", ["prune.structure=units", "prune.scope=layerwise", "prune.layer_fractions=",
                                        "lottery.levels=5", "lottery.controls="], log=print)
    st, c3 = compress(units.run_dir, 5, ["compress.shrink=true"])
    d = imp["dense_f32"]
    return HEAD + [row("dense f32 (IMP level 0)", d, d, c1),
                   row("IMP ticket, masked (level 11)", imp["ticket_f32"], d, c1),
                   row("IMP ticket, dead neurons removed", imp["ticket_shrunk"], d, c1),
                   row("IMP ticket, int8", imp["ticket_int8"], d, c1),
                   row("IMP ticket shrunk + int8", imp["ticket_shrunk_int8"], d, c1),
                   row("structured IMP (neurons, level 5), shrunk", st["ticket_shrunk"], d, c3),
                   row("SVD 90% energy of dense, fine-tuned", fact["factorized_ft"], d, c2)]


def minilm(a) -> list[str]:
    if not a.run_dir:
        raise lth.UserError("minilm needs --run-dir RUN "
                            "(a finished `lth lottery --config configs/bert_minilm_bbc.py` run)")
    heads, c1 = compress(a.run_dir, 0, ["compress.heads=0.5"])
    fact, c2 = compress(a.run_dir, 0, [f"compress.factorize={FACT_BERT}", "compress.rank=128", "compress.finetune=1ep"])
    both, c3 = compress(a.run_dir, 0, ["compress.heads=0.5", f"compress.factorize={FACT_BERT}", "compress.rank=128",
                                       "compress.finetune=1ep"])
    shared = lth.lottery("bert_minilm_bbc", ["model.share_layers=3", "lottery.levels=0", "lottery.controls=",
                                             "train.duration=3ep", f"train.distill.teacher={a.run_dir}/level_0"],
                         log=print)
    sh, c4 = compress(shared.run_dir, 0, [])
    d = DENSE["physical"] = heads["dense_f32"]
    # the shared model runs every layer, as dense does: its speed is measured in its own command, so
    # its ratio to dense is of two commands minutes apart (marked ≈), not side by side
    shared_row = dict(sh["ticket_f32"], speedup_b1=d["latency_ms_b1"] / sh["ticket_f32"]["latency_ms_b1"],
                      speedup_b64=sh["ticket_f32"]["throughput_b64"] / d["throughput_b64"])
    approx = "(≈: timed in its own command)"
    return FAMILY_HEAD + [
        row("dense f32 (MiniLM-L6 fine-tuned)", d, d, c1, "-"),
        row("int8 PTQ (qwix, dynamic activations)", heads["ticket_int8"], d, c1, "quantization"),
        row("50% of heads pruned (Michel et al.), shrunk", heads["ticket_shrunk"], d, c1, "pruning"),
        row("heads pruned + shrunk, int8", heads["ticket_shrunk_int8"], d, c1, "pruning + quantization"),
        row("FFN + word embedding at rank 128 (ALBERT's E), fine-tuned 1 epoch", fact["factorized_ft"], d, c2,
            "factorization"),
        row("heads pruned + shrunk + factorized, fine-tuned 1 epoch", both["factorized_ft"], d, c3,
            "pruning + factorization"),
        row(f"ALBERT-style, 3 groups of 2 layers, distilled 3 epochs {approx}", shared_row, d, c4, "weight sharing")]


def bytes_row(name, st, dense_bytes, command, family="quantization") -> str:
    """A row of a stage counted in bytes (low-bit weights): bits removed against dense float32."""
    acc = f"{100 * st['test_accuracy']:.2f}" + (f" ± {100 * st['test_accuracy_std']:.2f}"
                                                  if st.get("test_accuracy_std") else "")
    key = COMMANDS.setdefault(command, chr(ord("A") + len(COMMANDS)))
    removed = 100 * (1 - st["bytes"] / dense_bytes)
    return f"| {family} | {name} | {st['bytes']:,.0f} bytes | {removed:.1f}% of the bits | - | - | {acc} | {key} |"


def acc_row(family, name, rows, removed, command) -> str:
    """A row of masked (unstructured) networks: no speed-up on dense kernels; accuracies joined by ' / '."""
    acc = " / ".join(f"{100 * r['test_accuracy']:.2f}" + (f" ± {100 * r['test_accuracy_std']:.2f}"
                                                           if r.get("test_accuracy_std") else "") for r in rows)
    key = COMMANDS.setdefault(command, chr(ord("A") + len(COMMANDS)))
    return f"| {family} | {name} | - | {removed} | - | - | {acc} | {key} |"


def student_dir(layers: int) -> str:
    """A config.json of MiniLM-L6 with `layers` layers (the distilled students' model), written once."""
    import json

    from lth.models.bert_import import resolve
    d = os.path.join(ROOT, "runs", f"minilm_l{layers}_student")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(resolve("minilm_l6"), "config.json")) as f:
        cfg = json.load(f)
    cfg["num_hidden_layers"] = layers
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    return d


def survey(a, d) -> list[str]:
    """Gordon's other families on MiniLM-L6 / BBC News (module docstring)."""
    out = []
    sets = ["compress.low_bits=4", "compress.mixed=8,4,2", "compress.activations=none", "compress.hessian_batches=1",
            "compress.power_iters=20"]   # 37 kernels: 20 Hessian-vector products each at most
    low = lth.compress(a.run_dir, 0, sets, log=print)
    cmd = f"lth compress --run-dir {os.path.relpath(a.run_dir, ROOT)} --level 0 " + " ".join(f"--set {x}" for x in sets)
    dense_bytes = low.summary["bytes"]["dense_f32"]
    st = low.summary["stages"]
    out += [bytes_row("int8 weights (PTQ, weight-only)", {**st["ticket_int8_ptq"], "bytes": st["ticket_int8_ptq"]
                                                           ["sparse_int8"]}, dense_bytes, cmd),
            bytes_row("int4 weights, groups of 128 (PTQ)", st["ticket_int4_ptq"], dense_bytes, cmd),
            bytes_row(f"mixed 8/4/2 bits by Hessian (Q-BERT), mean {st['ticket_mixed_ptq']['mean_bits']:.2f} bits",
                      st["ticket_mixed_ptq"], dense_bytes, cmd)]
    drop = lth.lottery("bert_minilm_bbc", ["model.layerdrop=0.2", "lottery.levels=0", "lottery.controls=",
                                           "train.duration=3ep"], log=print)
    ld, c = compress(drop.run_dir, 0, ["compress.layers=every_other"])
    out += [row("LayerDrop 0.2 (3 epochs), every other layer removed", ld["layers_dropped"], ld["dense_f32"], c,
                "layer dropping")]
    sd = student_dir(3)
    names = {"logits": "logits", "patient": "Patient KD (α = 0.3)", "tinybert_layers": "TinyBERT's intermediate layers"}
    for kind, extra in (("logits", []), ("patient", ["train.distill.alpha=0.3"]), ("tinybert_layers", [])):
        sets = [f"model.name=bert:{sd}", "model.pretrained_layers=0,2,4", "lottery.levels=0", "lottery.controls=",
                "train.duration=3ep", f"train.distill.teacher={a.run_dir}/level_0", f"train.distill.kind={kind}",
                *extra]
        student = lth.lottery("bert_minilm_bbc", sets, log=print)
        stc, c = compress(student.run_dir, 0, [])
        # the student's speed against the teacher's dense, two commands apart (≈)
        r = dict(stc["ticket_f32"], speedup_b1=d["latency_ms_b1"] / stc["ticket_f32"]["latency_ms_b1"],
                 speedup_b64=stc["ticket_f32"]["throughput_b64"] / d["throughput_b64"])
        out.append(row(f"3-layer student (layers 0, 2, 4), {names[kind]}, 3 epochs (≈: timed in its own command)",
                       r, d,
                       "lth lottery --config configs/bert_minilm_bbc.py "
                       + " ".join(f"--set '{x.replace(ROOT + os.sep, '')}'" for x in sets), "distillation"))
    # task-agnostic vs downstream (the docs' transfer table, its arms reused): one-shot magnitude
    # tickets of the MLM-trained and of the task-fine-tuned network, and the pretrained weights'
    mlm = lth.lottery("bert_mlm_bbc", MLM_SETS, run_dir=os.path.join(ROOT, "runs", "bert_mlm"), log=print)
    sets = [f"transfer.sources=mlm={os.path.relpath(mlm.run_dir, ROOT)},bbc_news={os.path.relpath(a.run_dir, ROOT)}",
            "transfer.masks=oneshot", "transfer.densities=0.5,0.3", "transfer.weights=target", "transfer.dense=False"]
    tr = lth.transfer("bert_minilm_bbc", sets, run_dir=os.path.join(ROOT, "runs", "transfer_bbc"), log=print)
    cmd = ("lth transfer --config configs/bert_minilm_bbc.py --run-dir runs/transfer_bbc "
           + " ".join(f"--set '{x}'" for x in sets))
    labels = {"bbc_news": ("pruning", "magnitude ticket of the fine-tuned model (downstream)"),
              "mlm": ("pre-train vs downstream", "magnitude ticket of the MLM-trained model (task-agnostic)"),
              "magnitude": ("pruning (control)", "magnitude of the pretrained weights"),
              "random": ("pruning (control)", "random mask")}
    dens = sorted({r["target_density"] for r in tr.summary["rows"]}, reverse=True)
    pruned = " / ".join(f"{round(100 * (1 - x))}" for x in dens)
    for name, (family, label) in labels.items():
        rows = sorted((r for r in tr.summary["rows"] if r["name"] == name), key=lambda r: -r["target_density"])
        out.append(acc_row(family, f"{label}, {pruned} % pruned, fine-tuned", rows,
                           f"{pruned}% of the encoder (masked)", cmd))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=("mnist1d", "minilm"))
    p.add_argument("--run-dir", help="the lottery run (mnist1d: the demo run; minilm: required)")
    p.add_argument("--survey", action="store_true", help="minilm: also every other family (module docstring)")
    a = p.parse_args(argv)
    try:
        lines = (mnist1d if a.model == "mnist1d" else minilm)(a)
        if a.survey and a.model == "minilm":
            lines += survey(a, DENSE["physical"])
    except lth.UserError as e:
        print(f"lth: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    print("\n".join(["", *(f"{key}: `{cmd}`" for cmd, key in COMMANDS.items())]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
