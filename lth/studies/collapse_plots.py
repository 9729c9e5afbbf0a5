"""Plots of a layer-collapse summary: per-layer density vs compression (one panel per method) and
the critical compression of each method."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def layer_density(summary: dict, path: str) -> str:
    methods = list(summary["methods"])
    cols = min(3, len(methods))
    rows = math.ceil(len(methods) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), dpi=110, squeeze=False)
    cmap = plt.get_cmap("viridis")
    layers = list(summary["layers"])
    for ax, name in zip(axes.ravel(), methods):
        m = summary["methods"][name]
        xs = summary["compressions_log10"]
        for i, layer in enumerate(layers):
            ys = [max(m["kept_per_layer"][f"{x:g}"][layer] / summary["layers"][layer], 1e-9) for x in xs]
            ax.plot(xs, ys, color=cmap(i / max(1, len(layers) - 1)), lw=1.2)
        ax.axvline(m["critical_compression_log10"], color="red", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_title(f"{name} (critical 10^{m['critical_compression_log10']:.2f})")
        ax.set_xlabel("compression (log10)")
        ax.set_ylabel("layer density")
        ax.set_ylim(1e-9, 1.5)
    for ax in axes.ravel()[len(methods):]:
        ax.axis("off")
    fig.suptitle(f"{summary['model']}: layer densities (dark: input side); data: {summary['data']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def critical(summary: dict, path: str) -> str:
    names = list(summary["methods"])
    vals = [summary["methods"][n]["critical_compression_log10"] for n in names]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3.5), dpi=110)
    ax.bar(names, vals, color="tab:blue")
    ax.axhline(summary["max_compression_log10"], color="black", ls=":", label="max compression")
    ax.set_ylabel("critical compression (log10)")
    ax.set_title(f"{summary['model']}: layer collapse")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
