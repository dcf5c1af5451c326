"""Retrieval quality: nDCG@10, MRR@10, recall@1, recall@10, overall and per language.

Quality metrics use binary relevance and follow the usual (trec_eval / mteb) definitions, so numbers are comparable
with mteb's: for a query with relevant set R and ranking r_1, r_2, ...

* nDCG@k = sum_{i<=k, r_i in R} 1/log2(i+1) / sum_{i<=min(k,|R|)} 1/log2(i+1)
* MRR@k = 1/i for the first i <= k with r_i in R, else 0
* recall@k = |R intersect {r_1..r_k}| / |R|

Each is averaged over queries. Ties in the score are broken by corpus order (stable sort); mteb breaks them by
document id, so tied scores can differ in the last digits. Per-language numbers search the queries of one language
against the whole corpus (one shared multilingual index, as deployed), not against a per-language corpus: a model
that confuses languages is penalised, as it would be in production.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRICS = ("ndcg_at_10", "mrr_at_10", "recall_at_1", "recall_at_10")


def retrieval_metrics(scores: np.ndarray, relevant: Sequence[set[int]], k: int = 10) -> dict[str, float]:
    """Mean nDCG@k, MRR@k, recall@1 and recall@k over queries.

    Args:
        scores: similarity of every query to every document (higher = more relevant).
        relevant: per query, the indices of its relevant documents (non-empty).
        k: cut-off of nDCG, MRR and the second recall.

    Shapes:
        scores: (Q, N); len(relevant) == Q.
    """
    per_query = per_query_metrics(scores, relevant, k)
    return {name: float(values.mean()) for name, values in per_query.items()}


def per_query_metrics(scores: np.ndarray, relevant: Sequence[set[int]], k: int = 10) -> dict[str, np.ndarray]:
    """The same metrics, one value per query (for grouping by language).

    Shapes:
        scores: (Q, N) -> every value: (Q,).
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[0] != len(relevant):
        raise ValueError(f"scores must be (queries, documents) with {len(relevant)} rows, got shape {scores.shape}")
    if any(not rel for rel in relevant):
        raise ValueError("every query needs at least one relevant document")
    depth = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]  # (Q, depth) document indices, best first
    hits = np.array([[doc in rel for doc in row] for row, rel in zip(top, relevant)], dtype=float)  # (Q, depth)
    n_relevant = np.array([len(rel) for rel in relevant], dtype=float)  # (Q,)
    discounts = 1.0 / np.log2(np.arange(2, depth + 2))  # (depth,)
    ideal = np.array([discounts[: min(int(n), depth)].sum() for n in n_relevant])  # (Q,)
    first_hit = np.where(hits.any(1), hits.argmax(1) + 1, np.inf)  # (Q,) 1-based rank of the first hit
    return {
        f"ndcg_at_{k}": (hits * discounts).sum(1) / ideal,
        f"mrr_at_{k}": 1.0 / first_hit,
        "recall_at_1": hits[:, :1].sum(1) / n_relevant,
        f"recall_at_{k}": hits.sum(1) / n_relevant,
    }


def metrics_by_language(
    scores: np.ndarray, relevant: Sequence[set[int]], languages: Sequence[str], k: int = 10
) -> dict[str, dict[str, float]]:
    """Metrics of each language's queries, each searched against the whole corpus (see the module docstring).

    Shapes:
        scores: (Q, N); len(relevant) == len(languages) == Q.
    """
    per_query = per_query_metrics(scores, relevant, k)
    languages = np.asarray(languages)
    return {
        str(lang): {name: float(values[languages == lang].mean()) for name, values in per_query.items()}
        for lang in sorted(set(languages.tolist()))
    }
