"""Embedding distillation of ML-Embed: MSE of the student's embedding to the first d dims of a frozen teacher.

The teacher is wider (D >= d) and, being trained with MRL, its prefixes are themselves embeddings, so the student
can regress directly onto `teacher[..., :d]`. The teacher is never updated: its embedding is detached here even
if the caller forgot `torch.no_grad()`. Build the teacher with its *own* settings (its full depth, rank and width),
not the student's (the public reference code builds it with the student's options).

Self-distillation (`three_d_loss(self_distill=...)`) compares score distributions instead (`score_distill_kl`): the
full setting's scores over a step's candidates (`self_teacher_logits`) against every exit's and dim's
(`self_distill_exit`, `candidate_logits`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mlembed import distributed
from mlembed.losses.columns import as_negatives
from mlembed.losses.contrastive import upcast
from modeling_mlembed import truncate_embeddings

logger = logging.getLogger(__name__)


def distill_mse(student: torch.Tensor, teacher: torch.Tensor, kd_weight: float = 1.0) -> torch.Tensor:
    """`kd_weight` x mean squared error between the student embeddings and the teacher's first d dims.

    Formula:
        loss = kd_weight * mean_{i, k < d} (s_ik - t_ik)^2, t detached.

    Args:
        student: student embeddings, width d (gradient flows into them).
        teacher: teacher embeddings for the same texts, width D >= d (detached).
        kd_weight: weight of the term (the paper's `kd_weight`), >= 0.

    Inputs:
        +---------+----------+--------------------------------------------+
        | name    | shape    | content                                    |
        +=========+==========+============================================+
        | student | (..., d) | e.g. (B, d) queries or (B, N, d) negatives |
        | teacher | (..., D) | same leading shape, D >= d                 |
        +---------+----------+--------------------------------------------+

    Returns:
        scalar loss (mean over all elements of the student tensor).

    Shapes:
        student: (..., d), teacher: (..., D) -> ()

    References:
        Hinton et al., "Distilling the Knowledge in a Neural Network", 2015; Zhang et al., "ML-Embed", ICML 2026.

    Example:
        >>> import torch
        >>> student, teacher = torch.randn(4, 8, requires_grad=True), torch.randn(4, 16)
        >>> distill_mse(student, teacher, kd_weight=0.5).backward()
    """
    if kd_weight < 0:
        raise ValueError(f"kd_weight must be >= 0, got {kd_weight}")
    if student.ndim < 1 or teacher.ndim != student.ndim or teacher.shape[:-1] != student.shape[:-1]:
        raise ValueError(
            f"student (..., d) and teacher (..., D) must share their leading shape, got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    if teacher.shape[-1] < student.shape[-1]:
        raise ValueError(
            f"the teacher must be at least as wide as the student (D >= d), got D={teacher.shape[-1]} "
            f"and d={student.shape[-1]}"
        )
    target = teacher[..., : student.shape[-1]].detach().to(student.dtype)  # (..., d)
    return kd_weight * F.mse_loss(student, target)


def score_distill_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """KL divergence from the teacher's to the student's distribution over the same candidates, per query.

    Why: the student learns to *rank* like the teacher (which candidate is how likely the answer) without having to
    reproduce its vectors, so it works across widths (an MRL prefix against the full width) and depths, and it needs
    no scale match between the two embeddings. Used by `three_d_loss` for self-distillation: the model's own full
    setting teaches its exits, dims and ranks.

    Formula:
        loss = mean_i sum_j p_ij (log p_ij - log s_ij), p = softmax(teacher_logits), s = softmax(student_logits),
        excluded candidates removed from both softmaxes; the teacher is detached.

    Args:
        student_logits: similarities / temperature of the student (gradient flows into them).
        teacher_logits: the teacher's, same candidates (detached here).
        exclude: candidates to leave out of both distributions (e.g. duplicate passages), or None.

    Shapes:
        student_logits, teacher_logits, exclude: (B, C) -> ()

    References:
        Hinton et al., "Distilling the Knowledge in a Neural Network", arXiv 1503.02531 (soft targets);
        Zhang et al., "Be Your Own Teacher", arXiv 1905.08094 (the deepest exit teaches the shallow ones).

    Example:
        >>> import torch
        >>> s, t = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6)
        >>> score_distill_kl(s, t).backward()
    """
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits must both be (B, C) over the same candidates, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    teacher_logits = teacher_logits.detach().to(student_logits.dtype)
    if exclude is not None:
        student_logits = student_logits.masked_fill(exclude, float("-inf"))
        teacher_logits = teacher_logits.masked_fill(exclude, float("-inf"))
    log_s, log_t = F.log_softmax(student_logits, dim=-1), F.log_softmax(teacher_logits, dim=-1)  # (B, C)
    keep = torch.isfinite(log_t)  # excluded candidates: probability 0, no term (0 * -inf would be nan)
    terms = torch.where(keep, log_t.exp() * (log_t - log_s), torch.zeros_like(log_s))  # (B, C)
    return terms.sum(-1).mean()


def teacher_distill_loss(
    q: torch.Tensor, p: torch.Tensor, negs: torch.Tensor | None, teacher_embeddings: Sequence[torch.Tensor | None]
) -> torch.Tensor:
    """Distillation of one exit: MSE of queries, positives and negatives to the teacher's first d dims."""
    if len(teacher_embeddings) != 3:
        raise ValueError(
            "teacher_embeddings must be a tuple (teacher_q, teacher_p, teacher_negs); teacher_negs may be None"
        )
    t_q, t_p, t_negs = teacher_embeddings
    loss = distill_mse(q, t_q) + distill_mse(p, t_p)
    if negs is not None and t_negs is not None:
        loss = loss + distill_mse(negs, as_negatives(t_negs, q.shape[0], t_negs.shape[-1]))
    return loss


def candidate_logits(
    q: torch.Tensor,
    p: torch.Tensor,
    negs: torch.Tensor | None,
    candidates: torch.Tensor | None,
    dim: int,
    temperature: float,
) -> torch.Tensor:
    """Scores of each query over the candidates its contrastive losses see, at the prefix `dim`: the in-batch
    positives (else its own positive), then its own hard negatives.

    Shapes:
        q, p: (B, d); negs: (B, N, d) or None; candidates: (W * B, d) or None -> (B, W * B + N) or (B, 1 + N)
    """
    q_d = truncate_embeddings(q, dim)  # (B, d')
    if candidates is not None:
        logits = [q_d @ truncate_embeddings(candidates, dim).T]  # (B, W * B)
    else:
        logits = [(q_d * truncate_embeddings(p, dim)).sum(-1, keepdim=True)]  # (B, 1)
    if negs is not None:
        logits.append(torch.einsum("bd,bnd->bn", q_d, truncate_embeddings(negs, dim)))  # (B, N)
    return torch.cat(logits, dim=1) / temperature


def self_distill_exit(
    student: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None],
    teacher_logits: torch.Tensor,
    dims: Sequence[int],
    exclude: torch.Tensor | None,
    temperature: float,
    skip_dim: int | None,
) -> dict[int, torch.Tensor]:
    """KL of the teacher's score distribution to this exit's at every dim (`skip_dim`: the teacher itself)."""
    q, p, negs, candidates = student
    return {
        dim: score_distill_kl(candidate_logits(q, p, negs, candidates, dim, temperature), teacher_logits, exclude)
        for dim in dims
        if dim != skip_dim
    }


def self_teacher_logits(
    embeddings: Sequence[torch.Tensor | None],
    batch: int,
    use_in_batch: bool,
    gather: bool,
    temperature: float,
) -> torch.Tensor:
    """The full setting's scores (detached): its queries over its own in-batch positives (gathered) and negatives.

    Shapes:
        embeddings: ((B, D), (B, D), (B, N, D) or (B * N, D) or None) -> (B, W * B + N) or (B, 1 + N)
    """
    if len(embeddings) != 3:
        raise ValueError("self_teacher_embeddings must be a tuple (q, p, negs); negs may be None")
    q, p = upcast(embeddings[0].detach()), upcast(embeddings[1].detach())
    negs = None if embeddings[2] is None else upcast(as_negatives(embeddings[2].detach(), batch, q.shape[-1]))
    candidates = (distributed.gather(p) if gather else p) if use_in_batch else None
    return candidate_logits(q, p, negs, candidates, q.shape[-1], temperature)
