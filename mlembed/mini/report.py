"""The tables of ml-embed-mini: nDCG@10 and speed per elastic setting on each held-out set, per language, and the
goals against plain fine-tuning (what `mlembed mini` prints and writes to `eval/table.md`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

REDUCED = {"layers": 3, "dim": 96, "rank": 64}  # the elastic setting of the table and the demo
EVAL_SETS = (  # name, title: the two held-out sets every table reports
    ("debian", "held-out Debian split (in domain: package summary -> description, same language)"),
    ("catalogues", "program messages (out of domain: translated message -> English original)"),
)
MODELS = (  # eval name, label in the table
    ("stock", "all-MiniLM-L6-v2 (stock)"),
    ("plain", "plain fine-tuning"),
    ("mini", "ml-embed-mini (3D-ML)"),
)
COLUMNS = (
    ("full", "full"),
    ("layers", "layers=3"),
    ("dim", "dim=96"),
    ("rank", "rank=64"),
    ("combined", "layers=3 + dim=96 + rank=64"),
)


def by_axis(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["axis"]: r for r in results}


def _set_title(name: str, report: dict[str, Any]) -> str:
    title = dict(EVAL_SETS).get(name, name)
    return f"{title}, {report['n_queries']} queries / {report['n_documents']} passages"


def results_table(sets: dict[str, dict[str, Any]], labels: dict[str, str] | None = None) -> str:
    """Markdown: nDCG@10 per setting on each held-out set, encode speed (first set), nDCG@10 per language per set."""
    labels = {**dict(MODELS), **(labels or {})}
    head = "| model | " + " | ".join(title for _, title in COLUMNS) + " |\n|---|" + "---:|" * len(COLUMNS) + "\n"
    parts = []
    for number, (name, report) in enumerate(sets.items()):
        quality = f"**nDCG@10, {_set_title(name, report)}** (* = dense model, rank n/a: layers=3 + dim=96 only)\n\n"
        quality += head
        speed = "**encode speed**, texts/s (queries + passages; dim does not change the compute)\n\n" + head
        for model, rows in report["models"].items():
            cells = by_axis(rows)
            row_q, row_s = [], []
            for axis, _ in COLUMNS:
                r = cells.get(axis)
                star = "*" if axis == "combined" and r is not None and r["rank"] is None else ""
                row_q.append("n/a" if r is None else f"{r['ndcg_at_10']:.3f}{star}")
                row_s.append("n/a" if r is None else f"{r['throughput']:.0f}")
            quality += f"| {labels.get(model, model)} | " + " | ".join(row_q) + " |\n"
            speed += f"| {labels.get(model, model)} | " + " | ".join(row_s) + " |\n"
        parts.append(quality)
        if number == 0:
            parts.append(speed)
    for name, report in sets.items():
        parts.append(language_table(report["models"], dict(EVAL_SETS).get(name, name), labels))
    return "\n".join(parts)


def language_table(
    results: dict[str, Sequence[dict[str, Any]]],
    title: str,
    labels: dict[str, str] | None = None,
    settings: Sequence[tuple[str, str]] = (("full", "full"), ("combined", "reduced")),
) -> str:
    """Markdown: nDCG@10 per language of every model at the given settings (axis, label)."""
    labels = labels or dict(MODELS)
    languages = sorted({lang for rows in results.values() for r in rows for lang in r.get("by_language", {})})
    shown = " / ".join(label for _, label in settings)
    text = f"**nDCG@10 per language, {title}** ({shown}; reduced = layers=3 + dim=96 + rank=64)\n\n"
    text += "| model | setting | " + " | ".join(languages) + " |\n|---|---|" + "---:|" * len(languages) + "\n"
    for name, rows in results.items():
        cells = by_axis(rows)
        for axis, setting in settings:
            if axis not in cells:
                continue
            scores = cells[axis]["by_language"]
            values = [f"{scores[lang]['ndcg_at_10']:.3f}" if lang in scores else "-" for lang in languages]
            text += f"| {labels.get(name, name)} | {setting} | " + " | ".join(values) + " |\n"
    return text


# The goals of ml-embed-mini against plain fine-tuning (issue 12), on every held-out set, in nDCG@10.
FULL_MARGIN, LAYERS_KEEP, DIM_KEEP = 0.01, 0.80, 0.95


def goal_checks(model: Sequence[dict[str, Any]], plain: Sequence[dict[str, Any]]) -> dict[str, tuple[str, bool]]:
    """{goal: (the numbers, met)}: full >= plain - 1 point; layers=3 keeps >= 80% and dim=96 >= 95% of the model's
    own full score; layers=3 and dim=96 beat plain fine-tuning cut the same way."""
    m, p = by_axis(model), by_axis(plain)
    full, layers, dim = (m[axis]["ndcg_at_10"] for axis in ("full", "layers", "dim"))
    p_full, p_layers, p_dim = (p[axis]["ndcg_at_10"] for axis in ("full", "layers", "dim"))
    return {
        "full >= plain - 0.01": (f"{full:.3f} vs {p_full:.3f}", full >= p_full - FULL_MARGIN),
        "layers=3 >= 80% of full": (f"{layers / full:.1%}", layers >= LAYERS_KEEP * full),
        "dim=96 >= 95% of full": (f"{dim / full:.1%}", dim >= DIM_KEEP * full),
        "layers=3 > plain layers=3": (f"{layers:.3f} vs {p_layers:.3f}", layers > p_layers),
        "dim=96 > plain dim=96": (f"{dim:.3f} vs {p_dim:.3f}", dim > p_dim),
    }


def goals_table(sets: dict[str, dict[str, Any]], model: str = "mini", plain: str = "plain") -> str:
    """Markdown: each goal of ml-embed-mini against plain fine-tuning on each held-out set, met or missed."""
    rows = {
        name: goal_checks(report["models"][model], report["models"][plain])
        for name, report in sets.items()
        if model in report["models"] and plain in report["models"]
    }
    if not rows:
        return ""
    goals = list(next(iter(rows.values())))
    text = "**goals** (nDCG@10, ml-embed-mini against plain fine-tuning)\n\n| held-out set | " + " | ".join(goals)
    text += " |\n|---|" + "---|" * len(goals) + "\n"
    for name, checks in rows.items():
        cells = [f"{value} {'met' if ok else '**missed**'}" for value, ok in checks.values()]
        text += f"| {name} | " + " | ".join(cells) + " |\n"
    return text
