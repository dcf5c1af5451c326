"""Quality against cost for a sweep: one panel per cost, one line per elastic axis, the Pareto front marked.

Parameters (changed by depth and rank) and index bytes per document (changed by the output dim) are different
costs, so each gets its own panel; a single panel would draw the dim axis as a vertical line. A setting is on the
Pareto front of a panel when no other setting is at least as good in quality and at most as costly, and strictly
better in one of the two.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# cost key -> (axis label, lower is better)
COSTS = {
    "params": ("parameters used", True),
    "index_bytes_per_doc": ("index bytes per document", True),
    "throughput": ("encode throughput (texts/s)", False),
}
_AXIS_STYLE = {"layers": ("tab:blue", "o"), "rank": ("tab:orange", "s"), "dim": ("tab:green", "^")}


def pareto_front(points: Sequence[tuple[float, float]], lower_cost_is_better: bool = True) -> list[int]:
    """Indices of the (cost, quality) points no other point dominates, sorted by cost.

    A point is dominated when another has quality >= and cost <= (>= when higher cost is better), one strictly.
    """
    sign = 1.0 if lower_cost_is_better else -1.0
    front = []
    for i, (cost_i, quality_i) in enumerate(points):
        dominated = any(
            sign * cost_j <= sign * cost_i and quality_j >= quality_i and (cost_j, quality_j) != (cost_i, quality_i)
            for cost_j, quality_j in points
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: sign * points[i][0])


def plot_tradeoff(
    results: Sequence[dict[str, Any]],
    path: str | Path,
    costs: Sequence[str] = ("params", "index_bytes_per_doc"),
    metric: str = "ndcg_at_10",
) -> Path:
    """Write a PNG of `metric` against each cost in `costs`; returns the path."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    unknown = [c for c in costs if c not in COSTS]
    if unknown:
        raise ValueError(f"unknown cost(s) {unknown}; choose from {sorted(COSTS)}")
    fig, axes = plt.subplots(1, len(costs), figsize=(5.5 * len(costs), 4.2), squeeze=False)
    for ax, cost in zip(axes[0], costs):
        _panel(ax, results, cost, metric)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    logger.info("wrote %s", path)
    return path


def _panel(ax: Any, results: Sequence[dict[str, Any]], cost: str, metric: str) -> None:
    label, lower_is_better = COSTS[cost]
    full = [r for r in results if r["axis"] == "full"]
    flat = []  # settings of axes that do not change this cost (a vertical line would hide the others)
    for axis, (color, marker) in _AXIS_STYLE.items():
        line = sorted(full + [r for r in results if r["axis"] == axis], key=lambda r: r[cost])
        if len({r[cost] for r in line}) > 1:
            ax.plot([r[cost] for r in line], [r[metric] for r in line], marker=marker, color=color, label=axis)
        else:
            flat += [r for r in line if r["axis"] == axis]
    others = [r for r in results if r["axis"] == "combined"]
    if others:
        ax.scatter([r[cost] for r in others], [r[metric] for r in others], color="gray", marker="x", label="combined")
    if flat:
        ax.scatter([r[cost] for r in flat], [r[metric] for r in flat], color="silver", marker=".", label="other axes")
    if full:
        ax.scatter([full[0][cost]], [full[0][metric]], color="black", marker="*", s=140, zorder=3, label="full")
    front = pareto_front([(r[cost], r[metric]) for r in results], lower_is_better)
    ax.plot(
        [results[i][cost] for i in front],
        [results[i][metric] for i in front],
        color="red",
        linestyle="--",
        drawstyle="steps-post",
        alpha=0.6,
        label="Pareto front",
    )  # best quality reachable at each cost
    ax.scatter(
        [results[i][cost] for i in front],
        [results[i][metric] for i in front],
        s=160,
        facecolors="none",
        edgecolors="red",
        zorder=4,
    )
    if cost != "throughput" and min(r[cost] for r in results) > 0:
        ax.set_xscale("log", base=2 if cost == "index_bytes_per_doc" else 10)
    ax.set_xlabel(label)
    ax.set_ylabel(metric.replace("_at_", "@"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
