"""Text tables of lottery summaries: level, density, and test accuracy per arm (mean ± std)."""
from __future__ import annotations


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
    """Markdown table of a `lth pai` summary: one row per method (and sanity check)."""
    lines = ["| method | density % | test accuracy % | early-stop test accuracy % |", "|---|---|---|---|"]
    for name, e in summary["methods"].items():
        lines.append(f"| {name} | {100 * e['density']:.3f} | {_cell(e, 'test_accuracy')} "
                     f"| {_cell(e, 'test_accuracy_at_best_val')} |")
    return "\n".join(lines)


def heads_table(out: dict) -> str:
    """Markdown table of `lth heads`: test accuracy vs heads kept, and vs MLPs kept."""
    lines = [f"dense test accuracy: {100 * out['dense_test_accuracy']:.2f}%", ""]
    for kind in ("heads", "mlps"):
        rows = out[kind]
        total = rows[0]["kept"]
        lines += [f"| {kind} kept | % kept | test accuracy % |", "|---|---|---|"]
        lines += [f"| {r['kept']}/{total} | {100 * r['fraction_kept']:.0f} | {_cell(r, 'test_accuracy')} |" for r in rows]
        lines.append("")
    return "\n".join(lines).rstrip()
