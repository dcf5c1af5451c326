"""Training data: the parquet format and its validation, the one-dataset-per-step sampler, the collator.

Needs the `train` extra (datasets, pyarrow). Names are imported on first use, so sibling modules of this package
(and `import mlembed`) do not pull in the training dependencies.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MLEmbedCollator": "collator",
    "as_training_corpus": "format",
    "DATASET_TYPES": "format",
    "DEFAULT_MAX_ROWS": "format",
    "DEFAULT_NUM_NEGATIVES": "format",
    "EmbeddingDataset": "format",
    "TrainingCorpus": "format",
    "build_dataset": "format",
    "from_hf_dataset": "format",
    "infer_dataset_type": "format",
    "load_parquet_corpus": "format",
    "OneDatasetBatchSampler": "sampler",
    "Example": "mining",
    "mine_negatives": "mining",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
