"""Evaluation of the elastic profile: local retrieval sweeps over (layers, dim, rank), tables, plots, mteb.

The mteb wrapper is imported lazily (mteb is the `eval` extra and takes seconds to import).
"""

from __future__ import annotations

from typing import Any

from .data import RetrievalData, load_retrieval_data, pairs_to_data
from .metrics import METRICS, metrics_by_language, per_query_metrics, retrieval_metrics
from .plot import pareto_front, plot_tradeoff
from .sweep import build_grid, markdown_table, sweep, write_results

_MTEB_NAMES = (
    "MLEmbedMTEBEncoder",
    "local_retrieval_task",
    "local_sts_task",
    "retrieval_task_from_data",
    "load_mteb_encoder",
)

__all__ = [
    "METRICS",
    "RetrievalData",
    "build_grid",
    "load_retrieval_data",
    "markdown_table",
    "metrics_by_language",
    "pairs_to_data",
    "pareto_front",
    "per_query_metrics",
    "plot_tradeoff",
    "retrieval_metrics",
    "sweep",
    "write_results",
    *_MTEB_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in _MTEB_NAMES:
        from . import mteb_wrapper

        return getattr(mteb_wrapper, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
