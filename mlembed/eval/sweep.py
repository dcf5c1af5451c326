"""Sweep the elastic profile of a model (depth x output dim x MEL rank) on local retrieval data.

Every grid point gets quality (nDCG@10, MRR@10, recall@1/10, overall and per language) and its cost measured on this
machine: encode throughput, peak memory, index bytes per document and parameters used. Queries get the model's
`query` prompt, documents its `document` prompt.

Design choices:
* All settings are validated (with `model.resolve_axes`) before anything is encoded.
* Settings that differ only in `dim` share one encode: the model's `dim=d'` output is the first d' values of the
  full embedding, re-normalised, which is exactly what the sweep does with the cached full-width embedding. The
  output dim does not change the compute, so those settings report the throughput and memory of that encode.
* Throughput = (queries + documents) / wall-clock seconds of the encode, after a small warm-up batch.
* Peak memory = the most memory in use during the encode above what was in use just before it (the model weights
  are therefore excluded). On CUDA it is read exactly from the caching allocator (`torch.cuda.max_memory_allocated`);
  on the CPU torch allocates through malloc, which no torch API tracks, so the process resident set size is sampled
  every 2 ms (`/proc/self/statm`, Linux only, `None` elsewhere). The CPU number is approximate: it can miss spikes
  shorter than the interval and reads low when malloc reuses memory freed by an earlier setting.

CLI: `mlembed eval path/to/model --data pairs.jsonl --depths 4,8 --dims 256,64 --ranks 256,64 -o eval_out`.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mlembed.sizes import human_count
from modeling_mlembed import truncate_embeddings

from .data import RetrievalData, load_retrieval_data
from .metrics import METRICS, metrics_by_language, retrieval_metrics

logger = logging.getLogger(__name__)

GRIDS = ("axes", "full")
AXES = ("layers", "dim", "rank")


def build_grid(
    model: Any,
    layers: Sequence[int] | None = None,
    dims: Sequence[int] | None = None,
    ranks: Sequence[int] | None = None,
    grid: str = "axes",
    combined: bool = True,
) -> list[dict[str, Any]]:
    """The settings to evaluate, validated: [{'layers', 'dim', 'rank', 'axis'}, ...], full setting first.

    `grid='axes'` varies one axis at a time from the full setting, plus (with `combined` and two or more axes
    given) the setting with every given axis at its smallest value. `grid='full'` is the cartesian product. The full
    value of each axis is always included. `axis` names what differs from the full setting: `full`, one axis name,
    or `combined`.
    """
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
    full = model.resolve_axes(None, None, None)  # (L, d, r or None)
    values = [
        _axis_values(model, "layers", layers, full[0]),
        _axis_values(model, "dim", dims, full[1]),
        _axis_values(model, "rank", ranks, full[2]),
    ]
    if grid == "full":
        points = list(itertools.product(*values))
    else:
        points = [full]
        for i, axis_values in enumerate(values):
            points += [tuple(v if j == i else full[j] for j in range(3)) for v in axis_values if v != full[i]]
        reduced = [min(v, key=_order) if len(v) > 1 else full[i] for i, v in enumerate(values)]
        if combined and sum(r != f for r, f in zip(reduced, full)) >= 2:
            points.append(tuple(reduced))
    points = list(dict.fromkeys(points))  # de-duplicate, keep order
    for point in points:
        model.resolve_axes(*point)  # combined settings too, before any encoding
    return [dict(zip(AXES, point), axis=_axis_label(point, full)) for point in points]


def sweep(
    model: Any,
    data: str | Path | RetrievalData,
    layers: Sequence[int] | None = None,
    dims: Sequence[int] | None = None,
    ranks: Sequence[int] | None = None,
    grid: str = "axes",
    batch_size: int = 32,
    max_length: int | None = None,
    combined: bool = True,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Evaluate `model` on local retrieval data at every grid point; one result dict per point.

    Args:
        model: an `MLEmbedModel` (anything with `encode`, `resolve_axes`, `config`, `parameters`).
        data: a `.jsonl` / `.parquet` file of relevant (query, passage) pairs, or loaded `RetrievalData`.
        layers, dims, ranks: values to try per axis (`None` = the full value only). See `build_grid`.
        grid: `axes` (one axis at a time) or `full` (cartesian product).
        batch_size, max_length: passed to `model.encode` (`max_length=None`: the model's `max_seq_length`).
        combined: with `grid='axes'`, also evaluate all given axes at their smallest value together.
        progress: show a tqdm bar over the grid.

    Returns:
        Per point: `layers`, `dim`, `rank`, `axis`, the metrics in `METRICS`, `by_language`, `params`,
        `index_bytes_per_doc`, `throughput` (texts/s), `encode_seconds`, `peak_mem_mb`, `mem_method`, `n_queries`,
        `n_documents`, `device`.
    """
    settings = build_grid(model, layers, dims, ranks, grid, combined)
    if not isinstance(data, RetrievalData):
        data = load_retrieval_data(data)
    prompts = model.config.prompts or {}
    encodes: dict[tuple[int, int | None], dict[str, Any]] = {}
    results = []
    for setting in tqdm(settings, desc="elastic sweep", disable=not progress):
        key = (setting["layers"], setting["rank"])
        if key not in encodes:
            kwargs = dict(layers=key[0], rank=key[1], batch_size=batch_size, max_length=max_length)
            encodes[key] = _timed_encode(model, data, prompts, kwargs)
        results.append(_evaluate_point(model, data, setting, encodes[key]))
        logger.info("%s: nDCG@10 %.4f", _describe(setting), results[-1]["ndcg_at_10"])
    return results


def _evaluate_point(model: Any, data: RetrievalData, setting: dict[str, Any], encoded: dict[str, Any]) -> dict:
    dim = setting["dim"]
    queries, corpus = _truncate(encoded["queries"], dim), _truncate(encoded["corpus"], dim)
    scores = queries @ corpus.T  # (Q, N) cosine similarities
    result = dict(setting, **retrieval_metrics(scores, data.relevant))
    result["by_language"] = metrics_by_language(scores, data.relevant, data.languages) if data.languages else {}
    result.update(
        params=model.num_parameters(layers=setting["layers"], rank=setting["rank"]),
        index_bytes_per_doc=dim * np.dtype(np.float32).itemsize,
        throughput=(len(data.queries) + len(data.corpus)) / encoded["seconds"],
        encode_seconds=encoded["seconds"],
        peak_mem_mb=encoded["peak_mem_mb"],
        mem_method=encoded["mem_method"],
        n_queries=len(data.queries),
        n_documents=len(data.corpus),
        device=str(getattr(model, "device", "cpu")),
    )
    return result


def _timed_encode(model: Any, data: RetrievalData, prompts: dict[str, str], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Full-width embeddings of queries and corpus at one (layers, rank), with time and peak memory."""
    query_prompt = "query" if "query" in prompts else None
    doc_prompt = "document" if "document" in prompts else None
    model.encode(data.queries[:4], prompt_name=query_prompt, **kwargs)  # warm-up: depth view, tokenizer, kernels
    with _PeakMemory(getattr(model, "device", torch.device("cpu"))) as memory:
        start = time.perf_counter()
        queries = model.encode(data.queries, prompt_name=query_prompt, **kwargs)  # (Q, d)
        corpus = model.encode(data.corpus, prompt_name=doc_prompt, **kwargs)  # (N, d)
        seconds = time.perf_counter() - start
    return dict(queries=queries, corpus=corpus, seconds=seconds, peak_mem_mb=memory.peak_mb, mem_method=memory.method)


def _truncate(embeddings: np.ndarray, dim: int) -> np.ndarray:
    """The model's own `dim=` cut (`truncate_embeddings`) of cached full-width embeddings. (N, d) -> (N, dim)."""
    return truncate_embeddings(torch.from_numpy(embeddings), dim).numpy()


class _PeakMemory:
    """Peak memory above the starting level during a block (see the module docstring for the method)."""

    def __init__(self, device: torch.device, interval: float = 0.002) -> None:
        self.device, self.interval = torch.device(device), interval
        self.cuda = self.device.type == "cuda"
        self.method = "cuda_allocator" if self.cuda else ("rss_sampled" if _rss_bytes() is not None else "unavailable")
        self.peak_mb: float | None = None
        self._stop = threading.Event()
        self._peak = 0

    def __enter__(self) -> _PeakMemory:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        elif self.method == "rss_sampled":
            self._start = self._peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_bytes() or 0)

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
        elif self.method == "rss_sampled":
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes() or 0)
            self.peak_mb = (self._peak - self._start) / 2**20


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _axis_values(model: Any, name: str, values: Sequence[int] | None, full: int | None) -> list[int | None]:
    """Validated values of one axis (errors from `resolve_axes` name the allowed range), full value first."""
    if not values:
        return [full]
    for value in values:
        model.resolve_axes(**{name: value})
    return sorted({full, *(int(v) for v in values)}, key=_order, reverse=True)


def _order(value: int | None) -> float:
    return float("inf") if value is None else value


def _axis_label(point: tuple, full: tuple) -> str:
    changed = [name for name, value, ref in zip(AXES, point, full) if value != ref]
    return "full" if not changed else changed[0] if len(changed) == 1 else "combined"


def _describe(setting: dict[str, Any]) -> str:
    return f"layers={setting['layers']} dim={setting['dim']} rank={setting['rank']}"


# ----------------------------------------------------------------------------------------------------- writers
def markdown_table(results: Sequence[dict[str, Any]], languages: bool = True) -> str:
    """The sweep as a markdown table (for a model card); one row per grid point, nDCG@10 per language appended."""
    langs = sorted({lang for r in results for lang in r.get("by_language", {})}) if languages else []
    header = ["layers", "dim", "rank", "nDCG@10", "MRR@10", "R@1", "R@10"]
    header += ["params", "index B/doc", "texts/s", "peak MB"]
    header += [f"nDCG@10 {lang}" for lang in langs]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    for r in results:
        memory = "-" if r.get("peak_mem_mb") is None else f"{r['peak_mem_mb']:.1f}"
        cells = [str(r["layers"]), str(r["dim"]), "dense" if r["rank"] is None else str(r["rank"])]
        cells += [f"{r[m]:.4f}" for m in METRICS]
        cells += [human_count(r["params"]), str(r["index_bytes_per_doc"]), f"{r['throughput']:.1f}", memory]
        cells += [f"{r['by_language'][lang]['ndcg_at_10']:.4f}" if lang in r["by_language"] else "-" for lang in langs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(results: Sequence[dict[str, Any]], out_dir: str | Path, plot: bool = True) -> dict[str, Path]:
    """Write `table.md`, `results.json` (one entry per grid point) and `plot.png` into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"table": out / "table.md", "json": out / "results.json"}
    paths["table"].write_text(markdown_table(results), encoding="utf-8")
    paths["json"].write_text(json.dumps(list(results), indent=2) + "\n", encoding="utf-8")
    if plot:
        from .plot import plot_tradeoff

        paths["plot"] = plot_tradeoff(results, out / "plot.png")
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths
