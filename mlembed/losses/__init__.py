"""The 3D-ML objective (`ThreeDObjective`), its contrastive and distillation parts, and the sentence-transformers
front end (`MLEmbed3DLoss`).

Modules, bottom up: `contrastive` (InfoNCE), `axes` (MRL weights, the MEL rank drawn per step, the checks of the
dims and exits), `columns` (the flat batch of query, positive and negative columns); `distill` (MSE to a teacher,
the KL of self-distillation); `objective` (`three_d_loss`, `ThreeDObjective`); `st_loss` (`MLEmbed3DLoss`).
"""

from mlembed.losses.axes import mrl_weights, sample_mel_rank
from mlembed.losses.columns import split_columns, stack_columns
from mlembed.losses.contrastive import (
    hard_negative_infonce,
    in_batch_infonce,
    in_batch_targets,
    masked_infonce,
    passage_ids_from_tokens,
)
from mlembed.losses.distill import distill_mse, score_distill_kl
from mlembed.losses.objective import ThreeDObjective, three_d_loss
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
