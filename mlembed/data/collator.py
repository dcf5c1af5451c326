"""Batch collation: prompts, tokenisation with EOS, and the flat column layout the 3D objective reads."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from modeling_mlembed import tokenize_with_eos

logger = logging.getLogger(__name__)


class MLEmbedCollator:
    """Turn items of one dataset (`TrainingCorpus` items) into one tokenised flat batch of columns.

    The columns are the queries (with the dataset's prompt), their positives, then negative 1 of every query,
    negative 2 of every query, ...: `ThreeDObjective` embeds the queries and the rest in a pass each (each cut to its
    own longest row) and splits them back into columns.

    Args:
        tokenizer: a `transformers` tokenizer (its EOS id is appended when `append_eos`).
        max_length: maximum tokens per text, the EOS included.
        append_eos: decoders (last-token pooling) need it; encoders do not.

    Returns a dict:

    | key | value |
    |---|---|
    | `input_ids`, `attention_mask` | (C * B, T) right padded; rows [c * B, (c + 1) * B) are column c |
    | `num_columns` | C = 2 + N (N negatives per query) |
    | `in_batch` | True on retrieval datasets (the in-batch loss applies to them only) |
    | `dataset` | the dataset's name |
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
        texts = [item.get("prompt", "") + item["query"] for item in items]
        texts += [item["passage"] for item in items]
        texts += [item["negatives"][j] for j in range(counts[0]) for item in items]  # column-major
        return {
            **self.tokenize(texts),
            "num_columns": 2 + counts[0],
            "in_batch": items[0].get("type", "retrieval") == "retrieval",
            "dataset": names[0],
        }
