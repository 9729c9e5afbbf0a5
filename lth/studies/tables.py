"""Text tables of lottery summaries: level, density, and test accuracy per arm (mean ± std)."""
from __future__ import annotations

import math


def arms(summary: dict) -> dict[str, list[dict]]:
    """{'ticket': levels, '<control>': entries, ...} from a summary.json dict."""
    out = {"ticket": summary["levels"]}
    out.update({name: rows for name, rows in summary.get("controls", {}).items() if rows})
    return out


def _cell(entry, key):
    if entry is None:
        return "-"
    if key not in entry:
        return "diverged" if entry.get("diverged") else "-"
    text = f"{100 * entry[key]:.2f}"
    if len(entry.get("replicates", entry.get(key + "_replicates", []))) - entry.get("diverged", 0) > 1:
        text += f" ± {100 * entry[key + '_std']:.2f}"
    if entry.get("diverged"):
        text += f" ({entry['diverged']} diverged)"
    return text


def lottery_table(summary: dict, key: str = "test_accuracy") -> str:
    """Markdown table: one row per level, one accuracy column per arm (percent)."""
    a = arms(summary)
    by_level = {name: {e["level"]: e for e in rows} for name, rows in a.items()}
    header = ["level", "density %"] + [f"{n} {key.replace('_', ' ')} %" for n in a]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in summary["levels"]:
        lv = e["level"]
        cells = [str(lv), f"{100 * e['density']:.2f}"] + [_cell(by_level[n].get(lv), key) for n in a]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pai_table(summary: dict) -> str:
    """Markdown table of a `lth pai` summary: one row per arm (method, sanity check, compression)."""
    lines = ["| method | sanity check | compression | density % | test accuracy % | early-stop test accuracy % |",
             "|---|---|---|---|---|---|"]
    for e in summary["arms"]:
        lines.append(f"| {e['method']} | {e['sanity'] or '-'} | 10^{e['compression_log10']:.2f} "
                     f"| {100 * e['density']:.3f} "
                     f"| {_cell(e, 'test_accuracy')} | {_cell(e, 'test_accuracy_at_best_val')} |")
    return "\n".join(lines)


def collapse_table(summary: dict) -> str:
    """Markdown table of a layer-collapse summary: one row per method (a partial sweep says so)."""
    top = summary["max_compression_log10"]
    last = f"{summary['compressions_log10'][-1]:g}"
    lines = [f"| method | critical compression | reaches max (10^{top:.2f}) "
             f"| min layer density at 10^{float(last):.2f} "
             f"| points | seconds |", "|---|---|---|---|---|---|"]
    for name, m in summary["methods"].items():
        dens = (f"{min(k / summary['layers'][p] for p, k in m['kept_per_layer'][last].items()):.2e}"
                if last in m["kept_per_layer"] else "-")
        lines.append(f"| {name} | 10^{m['critical_compression_log10']:.2f} "
                     f"| {'yes' if m['reaches_max_compression'] else 'no'} "
                     f"| {dens} | {m['points_done']}/{len(summary['compressions_log10'])} | {m['seconds']:.1f} |")
    return "\n".join(lines)


def heads_table(out: dict) -> str:
    """Markdown table of `lth heads`: test accuracy vs heads kept, and vs MLPs kept."""
    lines = [f"dense test accuracy: {100 * out['dense_test_accuracy']:.2f}%", ""]
    for kind in ("heads", "mlps"):
        rows = out[kind]
        total = rows[0]["kept"]
        lines += [f"| {kind} kept | % kept | test accuracy % |", "|---|---|---|"]
        lines += [f"| {r['kept']}/{total} | {100 * r['fraction_kept']:.0f} | {_cell(r, 'test_accuracy')} |"
                  for r in rows]
        lines.append("")
    return "\n".join(lines).rstrip()


def stability_table(summary: dict) -> str:
    """Markdown table of `lth stability`: error barrier (instability) per level and rewind point."""
    lines = ["| level | density % | rewind k (it) | train barrier % | test barrier % | copies' test accuracy % |",
             "|---|---|---|---|---|---|"]
    for p in summary["points"]:
        def pm(key):
            text = f"{100 * p[key]:.2f}"
            return text + (f" ± {100 * p[key + '_std']:.2f}" if len(p["train_error"]) > 1 else "")
        lines.append(f"| {p['level']} | {100 * p['density']:.2f} | {p['k']} | {pm('train_barrier')} "
                     f"| {pm('test_barrier')} "
                     f"| {_cell(p['copies'], 'test_accuracy')} |")
    return "\n".join(lines)


def sparse_table(summary: dict) -> str:
    """Markdown table of `lth sparse`: one row per density, one column per method × distribution
    (test accuracy %, mean ± std), and each arm's training seconds."""
    cols = list(dict.fromkeys(f"{e['method']}-{e['distribution']}" for e in summary["arms"]))
    by = {(f"{e['method']}-{e['distribution']}", e["target_density"]): e for e in summary["arms"]}
    dens = sorted({e["target_density"] for e in summary["arms"]}, reverse=True)
    lines = ["| density % | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for d in dens:
        lines.append(f"| {100 * d:g} | " + " | ".join(_cell(by.get((c, d)), "test_accuracy") for c in cols) + " |")
    secs = [f"{sum(by[(c, d)].get('seconds') or 0 for d in dens if (c, d) in by):.0f}" for c in cols]
    lines.append("| seconds (all densities) | " + " | ".join(secs) + " |")
    return "\n".join(lines)


def compare_table(summary: dict) -> str:
    """Markdown table of `lth compare`: one row per method (its family and cost in trainings), one
    column per target density (test accuracy %, mean ± std; IMP at its level nearest that density)."""
    targets = sorted({p["target_density"] for m in summary["methods"].values() for p in m["points"]
                      if p.get("target_density")}, reverse=True)
    total = summary["train_steps"]
    head = ["method", "family", "trainings"] + [f"{100 * t:g}%" for t in targets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if "dense" in summary:
        lines.append("| dense | - | 1 | " + " | ".join(_cell(summary["dense"], "test_accuracy") for _ in targets)
                     + " |")
    for name, m in summary["methods"].items():
        cells, costs = [], []
        for t in targets:
            if m["family"] == "imp":   # the level whose density is nearest the target (log scale)
                p = min(m["points"], key=lambda p: abs(math.log(p["density"] / t)), default=None)
                text = f"{_cell(p, 'test_accuracy')} (L{p['level']}, {100 * p['density']:.1f}%)" if p else "-"
            else:
                p = next((q for q in m["points"] if q.get("target_density") == t), None)
                text = _cell(p, "test_accuracy")
            cells.append(text)
            if p:
                costs.append(p["cost_steps"] / total)
        cost = (f"{min(costs):g}–{max(costs):g}" if costs and min(costs) != max(costs)
                else (f"{costs[0]:g}" if costs else "-"))
        lines.append(f"| {name} | {FAMILY_NAMES.get(m['family'], m['family'])} | {cost} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


FAMILY_NAMES = {"imp": "after training", "pai": "at init", "sparse": "during training",
                "oneshot": "after training, one-shot"}
