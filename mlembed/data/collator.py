"""Batch collation: prompts, tokenisation with EOS, and what the contrastive losses need to know about a batch."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from mlembed.losses.contrastive import passage_ids_from_texts
from modeling_mlembed import tokenize_with_eos

logger = logging.getLogger(__name__)


class MLEmbedCollator:
    """Turn items of one dataset (`TrainingCorpus` items) into tokenised query / passage / negative batches.

    Args:
        tokenizer: a `transformers` tokenizer (its EOS id is appended when `append_eos`).
        max_length: maximum tokens per text, the EOS included.
        append_eos: decoders (last-token pooling) need it; encoders do not.

    Returns a dict:

    | key | value |
    |---|---|
    | `query` | {input_ids, attention_mask} (B, T); the dataset's prompt prefixed |
    | `passage` | {input_ids, attention_mask} (B, T) |
    | `negatives` | {input_ids, attention_mask} (B * N, T), the N negatives of query 0 first; `None` when N = 0 |
    | `num_negatives` | N |
    | `in_batch` | True on retrieval datasets (the in-batch loss applies to them only) |
    | `dataset` | the dataset's name |
    | `passage_ids` | LongTensor (B,): equal ids for identical passage texts, on every process (to mask duplicates) |
    """

    def __init__(self, tokenizer: Any, max_length: int = 512, append_eos: bool = True) -> None:
        if not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length must be an integer >= 2 (one token plus the EOS), got {max_length!r}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.append_eos = append_eos

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return tokenize_with_eos(self.tokenizer, texts, self.max_length, self.append_eos)

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not items:
            raise ValueError("cannot collate an empty batch")
        names = sorted({item["dataset"] for item in items})
        if len(names) > 1:
            raise ValueError(f"a batch must come from one dataset, got items from {names}; use OneDatasetBatchSampler")
        counts = sorted({len(item["negatives"]) for item in items})
        if len(counts) > 1:
            raise ValueError(f"every item of a batch needs the same number of negatives, got counts {counts}")
        num_negatives = counts[0]
        passages = [item["passage"] for item in items]
        passage_ids = passage_ids_from_texts(passages)  # (B,) content hashes: comparable across processes
        negatives = [text for item in items for text in item["negatives"]]  # (B * N,) in query order
        return {
            "query": self.tokenize([item.get("prompt", "") + item["query"] for item in items]),
            "passage": self.tokenize(passages),
            "negatives": self.tokenize(negatives) if num_negatives else None,
            "num_negatives": num_negatives,
            "in_batch": items[0].get("type", "retrieval") == "retrieval",
            "dataset": names[0],
            "passage_ids": passage_ids,
        }
