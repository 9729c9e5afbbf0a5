"""PNG plots of lottery summaries: a metric vs density, one line per arm (ticket and controls)."""
from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lth.studies.tables import arms  # noqa: E402

LABELS = {
    "test_accuracy": "final test accuracy (%)",
    "test_accuracy_at_best_val": "test accuracy at early stop (%)",
    "best_val_loss_step": "early-stop iteration (min. val loss)",
}
PERCENT = {"test_accuracy", "test_accuracy_at_best_val"}


def metric_vs_density(summary: dict, path: str, keys=("test_accuracy",), title: str | None = None) -> str:
    """One panel per metric key; log-scaled density axis, error bars = std over replicates."""
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4), dpi=120, squeeze=False)
    for ax, key in zip(axes[0], keys):
        scale = 100 if key in PERCENT else 1
        for name, rows in arms(summary).items():
            rows = sorted((e for e in rows if key in e), key=lambda e: -e["density"])
            if not rows:
                continue
            ax.errorbar([100 * e["density"] for e in rows], [scale * e[key] for e in rows],
                        yerr=[scale * e.get(key + "_std", 0.0) for e in rows], marker="o", ms=4, capsize=2, label=name)
        ax.set_xscale("log")
        ticks = sorted({round(100 * e["density"], 3) for e in summary["levels"]}, reverse=True)[::2]
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.invert_xaxis()
        ax.set_xlabel("weights remaining (%)")
        ax.set_ylabel(LABELS.get(key, key))
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(title or summary.get("config", {}).get("name", ""))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def accuracy_vs_density(summary: dict, path: str) -> str:
    return metric_vs_density(summary, path, ("test_accuracy",))


def heads_curve(out: dict, path: str) -> str:
    """`lth heads`: test accuracy vs fraction of heads (and of MLPs) kept, dense accuracy dashed."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for kind, label in (("heads", "attention heads"), ("mlps", "MLPs")):
        rows = out[kind]
        ax.errorbar([100 * r["fraction_kept"] for r in rows], [100 * r["test_accuracy"] for r in rows],
                    yerr=[100 * r["test_accuracy_std"] for r in rows], marker="o", ms=4, capsize=2, label=label)
    ax.axhline(100 * out["dense_test_accuracy"], ls="--", color="gray", label="dense")
    ax.invert_xaxis()
    ax.set_xlabel("kept (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title("structured pruning by gate importance")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def accuracy_vs_compression(summary: dict, path: str) -> str:
    """`lth pai`: test accuracy vs compression, one line per method, its sanity checks dashed in
    the same colour (as the SynFlow paper's Figure 6); error bars = std over replicates."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    methods = list(dict.fromkeys(e["method"] for e in summary["arms"]))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    styles = {None: "-", "shuffle": "--", "reinit": ":", "invert": "-."}
    lines = {}
    for e in summary["arms"]:
        if "test_accuracy" in e:
            lines.setdefault((e["method"], e["sanity"]), []).append(e)
    for (method, sanity), rows in lines.items():
        rows.sort(key=lambda e: e["compression_log10"])
        ax.errorbar([e["compression_log10"] for e in rows], [100 * e["test_accuracy"] for e in rows],
                    yerr=[100 * e.get("test_accuracy_std", 0.0) for e in rows], color=colours[method],
                    ls=styles.get(sanity, "--"), marker="o", ms=3, capsize=2,
                    label=method if sanity is None else f"{method} + {sanity}")
    ax.set_xlabel("compression (log10)")
    ax.grid(True, alpha=0.3)
    return _finish(fig, ax, summary, path)


def _finish(fig, ax, summary, path) -> str:
    """Accuracy axis label, legend (when there are lines), the config's name as title; saved to `path`."""
    ax.set_ylabel("test accuracy (%)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    ax.set_title(summary.get("config", {}).get("name", ""))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def stability_plots(summary: dict, path: str) -> str:
    """`lth stability`: test error along θ(α) for each rewind point (dense), error barrier vs k (one
    line per level), and barrier vs density across levels at each k with the copies' accuracy."""
    pts = summary["points"]
    alphas = summary["alphas"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), dpi=110)
    cmap = plt.get_cmap("viridis")
    dense = [p for p in pts if p["level"] == 0]
    for i, p in enumerate(dense):
        curve = [100 * sum(c[a] for c in p["test_error"]) / len(p["test_error"]) for a in range(len(alphas))]
        axes[0].plot(alphas, curve, color=cmap(i / max(1, len(dense) - 1)), label=f"k = {p['k']}")
    axes[0].set_xlabel("α  (θ = (1−α)·θ1 + α·θ2)")
    axes[0].set_ylabel("test error (%), dense")
    for level in sorted({p["level"] for p in pts}):
        rows = sorted((p for p in pts if p["level"] == level), key=lambda p: p["k"])
        axes[1].errorbar([max(p["k"], 1) for p in rows], [100 * p["test_barrier"] for p in rows],
                         yerr=[100 * p["test_barrier_std"] for p in rows], marker="o", capsize=2,
                         label=f"level {level} ({100 * rows[0]['density']:.3g}%)")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("rewind iteration k (0 drawn at 1)")
    axes[1].set_ylabel("test error barrier (%)")
    ks = sorted({p["k"] for p in pts})
    twin = axes[2].twinx()
    for i, k in enumerate(ks):
        rows = sorted((p for p in pts if p["k"] == k), key=lambda p: -p["density"])
        colour = cmap(i / max(1, len(ks) - 1))
        axes[2].plot([100 * p["density"] for p in rows], [100 * p["test_barrier"] for p in rows], marker="o",
                     color=colour, label=f"barrier, k = {k}")
        twin.plot([100 * p["density"] for p in rows],
                  [100 * p["copies"].get("test_accuracy", float("nan")) for p in rows],
                  ls="--", marker="x", color=colour, label=f"accuracy, k = {k}")
    axes[2].set_xscale("log")
    axes[2].invert_xaxis()
    axes[2].set_xlabel("weights remaining (%)")
    axes[2].set_ylabel("test error barrier (%)")
    twin.set_ylabel("copies' test accuracy (%), dashed")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"instability analysis: {summary.get('config', {}).get('name', '')} (BatchNorm: {summary['bn']})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def sparse_accuracy_vs_density(summary: dict, path: str) -> str:
    """`lth sparse`: test accuracy vs density (log axis, sparser to the right), one colour per
    method, one line style per distribution; error bars = std over replicates."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    methods = list(dict.fromkeys(e["method"] for e in summary["arms"]))
    dists = list(dict.fromkeys(e["distribution"] for e in summary["arms"]))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    styles = dict(zip(dists, ["-", "--", ":", "-.", (0, (5, 1))]))
    lines = {}
    for e in summary["arms"]:
        if "test_accuracy" in e:
            lines.setdefault((e["method"], e["distribution"]), []).append(e)
    for (method, dist), rows in lines.items():
        rows.sort(key=lambda e: -e["target_density"])
        ax.errorbar([100 * e["density"] for e in rows], [100 * e["test_accuracy"] for e in rows],
                    yerr=[100 * e.get("test_accuracy_std", 0.0) for e in rows], color=colours[method],
                    ls=styles.get(dist, "-"), marker="o", ms=3, capsize=2, label=f"{method} ({dist})")
    return _density_axis(fig, ax, summary, path, sorted({round(100 * e["target_density"], 2) for e in summary["arms"]}))


def _density_axis(fig, ax, summary, path, ticks=None) -> str:
    """Density (%) on a log x axis, sparser to the right (at `ticks` when given); then `_finish`."""
    ax.set_xscale("log")
    if ticks:
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.grid(True, which="both", alpha=0.3)
    return _finish(fig, ax, summary, path)


FAMILY_COLOURS = {"imp": "Blues", "pai": "Oranges", "sparse": "Greens", "oneshot": "Purples"}


def compare_plot(summary: dict, path: str) -> str:
    """`lth compare`: test accuracy vs density (log axis, sparser to the right), one line per method,
    families by colour (IMP blues, prune-at-init oranges, sparse training greens), the dense
    network's accuracy as a grey band (mean ± std); error bars = std over replicates."""
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=120)
    fams = {}
    for name, m in summary["methods"].items():
        fams.setdefault(m["family"], []).append(name)
    for fam, names in fams.items():
        cmap = plt.get_cmap(FAMILY_COLOURS.get(fam, "Greys"))
        for i, name in enumerate(names):
            pts = sorted((p for p in summary["methods"][name]["points"] if "test_accuracy" in p),
                         key=lambda p: -p["density"])
            if pts:
                ax.errorbar([100 * p["density"] for p in pts], [100 * p["test_accuracy"] for p in pts],
                            yerr=[100 * p.get("test_accuracy_std", 0.0) for p in pts],
                            color=cmap(0.45 + 0.5 * i / max(1, len(names))),
                            marker="o", ms=3, capsize=2, ls="--" if name.endswith("reinit") else "-", label=name)
    if "test_accuracy" in summary.get("dense", {}):
        d = summary["dense"]
        mu, sd = 100 * d["test_accuracy"], 100 * d.get("test_accuracy_std", 0.0)
        ax.axhspan(mu - sd, mu + sd, color="grey", alpha=0.25, label="dense")
    targets = {round(100 * p["target_density"], 2) for m in summary["methods"].values() for p in m["points"]
               if p.get("target_density")}
    return _density_axis(fig, ax, summary, path, sorted(targets | {50.0, 80.0}))


def oneshot_accuracy(result: dict, path: str) -> str:
    """`lth oneshot`: test accuracy vs weights remaining, one line per method for the unstructured
    targets and one marker per N:M pattern; dashed: after the recovery fine-tune."""
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=120)
    rows = result.get("rows", [])
    for i, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
        color = f"C{i}"
        mine = [r for r in rows if r["method"] == method]
        flat = sorted((r for r in mine if r["pattern"] == "unstructured"), key=lambda r: -r["density"])
        for key, style in (("test_accuracy", "-"), ("recovered_accuracy", "--")):
            pts = [(100 * r["density"], 100 * r[key]) for r in flat if key in r]
            if pts:
                ax.plot(*zip(*pts), style, marker="o", ms=4, color=color,
                        label=method + (" + recovery" if key == "recovered_accuracy" else ""))
            for r in mine:
                if r["pattern"] != "unstructured" and key in r:
                    ax.plot(100 * r["density"], 100 * r[key], "s" if key == "test_accuracy" else "D", color=color,
                            mfc="none" if key == "recovered_accuracy" else color)
                    ax.annotate(r["target"], (100 * r["density"], 100 * r[key]), fontsize=7,
                                xytext=(3, 3), textcoords="offset points")
    ax.axhline(100 * result["trained"]["test_accuracy"], color="k", lw=0.8, ls=":", label="trained network")
    return _remaining_axis(fig, ax, f"one-shot pruning of level {result['level']}", path)


def transfer(summary: dict, path: str) -> str:
    """`lth transfer`: test accuracy vs weights remaining, one line per ticket source and control; the
    dense network dotted."""
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=120)
    rows = summary.get("rows", [])
    for i, name in enumerate(dict.fromkeys(r["name"] for r in rows if r["kind"] != "dense")):
        mine = sorted((r for r in rows if r["name"] == name), key=lambda r: -r["target_density"])
        ax.errorbar([100 * r["target_density"] for r in mine], [100 * r["test_accuracy"] for r in mine],
                    yerr=[100 * r["test_accuracy_std"] for r in mine], marker="o", ms=4, capsize=2,
                    ls="--" if mine[0]["kind"] == "control" else "-", color=f"C{i}", label=name)
    for r in rows:
        if r["kind"] == "dense":
            ax.axhline(100 * r["test_accuracy"], color="k", lw=0.8, ls=":", label="dense")
    return _remaining_axis(fig, ax, f"tickets transferred to {summary.get('task', 'the target')}", path)


def _remaining_axis(fig, ax, title: str, path: str) -> str:
    """Weights remaining (%, falling to the right) against test accuracy, grid, legend, title; saved."""
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
