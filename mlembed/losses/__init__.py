"""The 3D-ML losses: contrastive (in-batch + hard negatives), Matryoshka combination (3D weighting), distillation."""

from mlembed.losses.contrastive import (
    hard_negative_infonce,
    in_batch_infonce,
    in_batch_targets,
    masked_infonce,
    passage_ids_from_texts,
)
from mlembed.losses.distill import distill_mse
from mlembed.losses.matryoshka import ThreeDMatryoshkaLoss, mrl_weights, sample_mel_rank, three_d_loss
from mlembed.losses.st_loss import MLEmbed3DLoss

__all__ = [
    "MLEmbed3DLoss",
    "ThreeDMatryoshkaLoss",
    "distill_mse",
    "hard_negative_infonce",
    "in_batch_infonce",
    "in_batch_targets",
    "masked_infonce",
    "mrl_weights",
    "passage_ids_from_texts",
    "sample_mel_rank",
    "three_d_loss",
]
