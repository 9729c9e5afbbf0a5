"""The GPU figures of the README (issue: past one device), in one short script: train steps/s and
model FLOP utilisation (MFU) of ResNet-20 and VGG-16 at batch 128 with R = 1, 8, 32 vmapped
replicates, the time of one OpenLTH ResNet-20 level (timed over a stated fraction of its recipe's
62,560 steps — 160 epochs of ⌈50,000 / 128⌉ = 391 — and extrapolated), and iterative SynFlow with
100 rounds on VGG-16 to 10^3 compression.

Synthetic CIFAR-shaped data (the step's cost does not depend on the pixels). MFU is the achieved
GFLOP/s (XLA's cost analysis of one replicate's step × R × steps/s) over the measured peak of a
large float32 matmul on the same device (lth.bench.matmul_peak), not the vendor's sheet.

    python experiments/gpu_figures.py                 # on the GPU machine (about 5 min on one H200)
    python experiments/gpu_figures.py --quick         # the same code path, sized for a 2-core CPU
    python experiments/gpu_figures.py --json out.json # also write the numbers
"""
from __future__ import annotations

import argparse
import json
import time

import jax

from lth.harness import bench as B

OPENLTH_RESNET20_STEPS = 160 * 391   # configs/openlth_cifar_resnet_20.py: 160ep, batch 128, data.drop_last=false


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CPU-sized: width 1/8, R = 1, 2, 0.5 s timings, 4 rounds")
    ap.add_argument("--json", default="", help="write the numbers to this file")
    args = ap.parse_args(argv)
    width, rs, seconds, rounds = (0.125, (2,), 0.5, 4) if args.quick else (1.0, (8, 32), 3.0, 100)
    device = f"{jax.devices()[0].device_kind} ×{len(jax.devices())} ({jax.default_backend()})"
    peak = B.matmul_peak()
    print(f"device: {device}; float32 matmul peak {peak:.0f} GFLOP/s; width {width}")
    rows = []
    for name in ("resnet20", "vgg16"):
        for r in rs:
            row = B.bench_model(name, batch=128, replicates=r, width=width, devices=1, seconds=seconds, mode="vmap")
            for reps, sps in ((1, row["steps_per_s"]), (r, row["vmapped_steps_per_s"])):
                if reps == 1 and any(x["model"] == name and x["R"] == 1 for x in rows):
                    continue
                rows.append({"model": name, "R": reps, "steps_per_s": sps, "examples_per_s": sps * 128 * reps,
                             "gflop_per_s": sps * reps * row["gflops_per_step"],
                             "mfu": sps * reps * row["gflops_per_step"] / peak, "compile_s": row["compile_s"]})
    print("\n| model | R | steps/s (each replicate) | examples/s (all) | GFLOP/s | MFU |\n|---|---|---|---|---|---|")
    for x in rows:
        print(f"| {x['model']} | {x['R']} | {x['steps_per_s']:.1f} | {x['examples_per_s']:.0f} | "
              f"{x['gflop_per_s']:.0f} | {100 * x['mfu']:.1f}% |")
    one = next(x for x in rows if x["model"] == "resnet20" and x["R"] == 1)
    level_s = OPENLTH_RESNET20_STEPS / one["steps_per_s"]
    print(f"\nOpenLTH ResNet-20 level ({OPENLTH_RESNET20_STEPS} steps at the R = 1 rate above, width {width}): "
          f"{level_s / 60:.1f} min (evaluation and data transfer not included)")
    t0 = time.perf_counter()
    syn = B.synflow_bench("vgg16", rounds=rounds, log10=3.0, width=width)
    print(f"SynFlow on VGG-16, {rounds} rounds to 10^3: {syn['total_s']:.1f} s (+ {syn['compile_s']:.1f} s compile; "
          f"{syn['precision']}), min layer kept {syn['min_layer_kept']}; wall {time.perf_counter() - t0:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "peak_gflops": peak, "width": width, "rows": rows,
                       "openlth_resnet20_level_s": level_s, "synflow": syn}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
