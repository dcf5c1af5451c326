"""The 3D-ML objective (`ThreeDObjective`), its contrastive and distillation parts, and the sentence-transformers
front end (`MLEmbed3DLoss`)."""

from mlembed.losses.contrastive import (
    hard_negative_infonce,
    in_batch_infonce,
    in_batch_targets,
    masked_infonce,
    passage_ids_from_tokens,
)
from mlembed.losses.distill import distill_mse, score_distill_kl
from mlembed.losses.objective import (
    ThreeDObjective,
    mrl_weights,
    sample_mel_rank,
    split_columns,
    stack_columns,
    three_d_loss,
)
from mlembed.losses.st_loss import MLEmbed3DLoss

__all__ = [
    "MLEmbed3DLoss",
    "ThreeDObjective",
    "distill_mse",
    "hard_negative_infonce",
    "in_batch_infonce",
    "in_batch_targets",
    "masked_infonce",
    "mrl_weights",
    "passage_ids_from_tokens",
    "sample_mel_rank",
    "score_distill_kl",
    "split_columns",
    "stack_columns",
    "three_d_loss",
]
