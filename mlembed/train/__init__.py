"""Training: `MLEmbedTrainer` (a `transformers.Trainer`), its data types, and the recipe entry (`mlembed train`).

The public import path for Trainer users:

    from mlembed.train import MLEmbedTrainer, MLEmbedCollator, TrainingCorpus

Names load on first use, so `mlembed.train.config` stays importable without the training extras.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MLEmbedTrainer": "mlembed.train.trainer",
    "MLEmbedCollator": "mlembed.data.collator",
    "TrainingCorpus": "mlembed.data.format",
    "EmbeddingDataset": "mlembed.data.format",
    "as_training_corpus": "mlembed.data.format",
    "from_hf_dataset": "mlembed.data.format",
    "load_parquet_corpus": "mlembed.data.format",
    "OneDatasetBatchSampler": "mlembed.data.sampler",
    "ThreeDObjective": "mlembed.losses.objective",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
