"""Task-agnostic vs task-specific BERT tickets (Chen et al. 2020; Gordon et al. 2020) on offline BBC
News data: the transfer table of docs/pages/results.md, "Pre-training vs downstream".

Sources, each the dense network trained once from the pretrained MiniLM-L6 (`lth lottery`, level 0):
the masked-LM objective on BBC article text (configs/bert_mlm_bbc.py, 300 iterations), BBC topic
classification (configs/bert_minilm_bbc.py), next-sentence prediction (configs/bert_minilm_nsp.py)
and sentence-order prediction (configs/bert_minilm_sop.py), one epoch each. Each source's one-shot
magnitude ticket at each density (`transfer.masks=oneshot`: its trained weights pruned by its own
rule) is fine-tuned on each target task from the pretrained weights (`transfer.weights=target`),
beside a random mask and the pretrained weights' magnitude with the MLM ticket's per-layer counts.
Then Gordon et al. 2020's "prune during pre-training, then fine-tune": the MLM source's one-shot
tickets at 30 / 60 / 90 % pruned keep their MLM-trained weights (`transfer.weights=trained`) and are
fine-tuned on BBC topics. Runs are reused when finished (runs/bert_*, runs/transfer_*).

    .venv/bin/python experiments/bert_transfer.py                      # ~2.5 h on 2 cores, one seed
    .venv/bin/python experiments/bert_transfer.py --targets bbc_news --densities 0.5
"""
from __future__ import annotations

import argparse
import os
import sys

import lth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = {   # name → (config, sets, run dir)
    "mlm": ("bert_mlm_bbc", ["train.duration=300it", "train.eval_every=150it", "train.lr=1e-4"], "bert_mlm"),
    "bbc_news": ("bert_minilm_bbc", [], "bert_bbc"),
    "bbc_nsp": ("bert_minilm_nsp", [], "bert_nsp"),
    "bbc_sop": ("bert_minilm_sop", [], "bert_sop"),
}
TARGETS = {"bbc_news": ("bert_minilm_bbc", "transfer_bbc"), "bbc_nsp": ("bert_minilm_nsp", "transfer_nsp")}
LABELS = {"mlm": "MLM objective (task-agnostic)", "bbc_news": "BBC topics", "bbc_nsp": "next sentence (NSP)",
          "bbc_sop": "sentence order (SOP)", "magnitude": "magnitude of the pretrained weights",
          "random": "random (the MLM ticket's per-layer counts)"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default=",".join(TARGETS), help="comma list of " + ", ".join(TARGETS))
    p.add_argument("--densities", default="0.5,0.3", help="densities of the encoder's prunable weights")
    p.add_argument("--gordon", default="0.7,0.4,0.1", help="densities of the MLM tickets fine-tuned from their "
                                                           "MLM-trained weights ('' = none)")
    a = p.parse_args(argv)
    try:
        targets = [t.strip() for t in a.targets.split(",") if t.strip()]
        for t in targets:
            if t not in TARGETS:
                raise lth.UserError(f"--targets entry {t!r}; allowed: {', '.join(TARGETS)}")
        dense, runs = {}, {}
        for name, (config, sets, rd) in SOURCES.items():
            r = lth.lottery(config, sets + ["lottery.levels=0", "lottery.controls="],
                            run_dir=os.path.join(ROOT, "runs", rd), log=print)
            runs[name] = os.path.relpath(r.run_dir, ROOT)
            dense[name] = r.summary["levels"][0]["test_accuracy"]
        sources = ",".join(f"{n}={d}" for n, d in runs.items())
        cells = {}
        for t in targets:
            config, rd = TARGETS[t]
            res = lth.transfer(config, [f"transfer.sources={sources}", "transfer.masks=oneshot",
                                        f"transfer.densities={a.densities}", "transfer.weights=target",
                                        "transfer.dense=False"], run_dir=os.path.join(ROOT, "runs", rd), log=print)
            for row in res.summary["rows"]:
                cells[(row["name"], t, row["target_density"])] = row["test_accuracy"]
        dens = sorted({d for (_, _, d) in cells}, reverse=True)
        cols = [(t, d) for t in targets for d in dens]
        print("| ticket found on ↓ / fine-tuned on → | "
              + " | ".join(f"{t} at {100 - 100 * d:.0f} % pruned" for t, d in cols) + " |")
        print("|---|" + "---|" * len(cols))
        for name in list(SOURCES) + ["magnitude", "random"]:
            print(f"| {LABELS[name]} | " + " | ".join(
                f"{100 * cells[(name, t, d)]:.2f}" if (name, t, d) in cells else "-" for t, d in cols) + " |")
        print("| dense, fine-tuned (no pruning) | " + " | ".join(f"{100 * dense[t]:.2f}" for t, _ in cols) + " |")
        print(f"\nthe MLM source's own masked-token accuracy: {100 * dense['mlm']:.2f} %")
        if a.gordon.strip():
            res = lth.transfer("bert_minilm_bbc", [f"transfer.sources=mlm={runs['mlm']}", "transfer.masks=oneshot",
                                                   f"transfer.densities={a.gordon}", "transfer.weights=trained",
                                                   "transfer.dense=False", "transfer.controls="],
                               run_dir=os.path.join(ROOT, "runs", "transfer_gordon"), log=print)
            rows = sorted(res.summary["rows"], key=lambda r: -r["target_density"])
            print("\n| pruned during pre-training (MLM weights kept), fine-tuned on bbc_news | "
                  + " | ".join(f"{100 - 100 * r['target_density']:.0f} % pruned" for r in rows) + " |")
            print("|---|" + "---|" * len(rows))
            print("| test accuracy % | " + " | ".join(f"{100 * r['test_accuracy']:.2f}" for r in rows) + " |")
    except lth.UserError as e:
        print(f"lth: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
