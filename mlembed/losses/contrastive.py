"""Contrastive InfoNCE losses of ML-Embed on embeddings: hard negatives per query, and in-batch across processes.

Both take L2-normalised embeddings (their dot products are cosine similarities) and divide by a *temperature*
(0.05 in the paper; sentence-transformers' `scale` is its inverse, 20). They work on tensors, not on a model, so
the 3D-ML loss (`mlembed.losses.objective`) can call them once per exit layer and output dim from one forward pass.
"""

from __future__ import annotations

import hashlib
import logging

import torch
import torch.nn.functional as F

from mlembed import distributed

logger = logging.getLogger(__name__)


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Half-precision embeddings to fp32 (differentiable); fp32 / fp64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (the paper uses 0.05; scale = 1 / temperature), got {temperature}")


def _check_pair(q: torch.Tensor, p: torch.Tensor) -> None:
    if q.ndim != 2 or p.ndim != 2 or q.shape != p.shape:
        raise ValueError(f"q and p must both be (B, d) with the same shape, got {tuple(q.shape)} and {tuple(p.shape)}")


def hard_negative_infonce(
    q: torch.Tensor, p: torch.Tensor, negs: torch.Tensor, temperature: float = 0.05
) -> torch.Tensor:
    """InfoNCE of each query over its own positive and its own mined hard negatives.

    Used on every batch (retrieval, clustering, classification). No other query's passages take part, so the loss
    is local and needs no communication across processes.

    Formula:
        loss = mean_i -log( exp(s(q_i, p_i) / t) / (exp(s(q_i, p_i) / t) + sum_j exp(s(q_i, n_ij) / t)) ),
        s = dot product of L2-normalised vectors (cosine similarity).

    Args:
        q: query embeddings, L2-normalised.
        p: positive passage embeddings, L2-normalised, row i belonging to query i.
        negs: hard negatives, L2-normalised, `negs[i]` belonging to query i.
        temperature: divides the similarities (a temperature, not a scale; scale = 1 / temperature).

    Inputs:
        +----------+-----------+------------------------------------+
        | name     | shape     | content                            |
        +==========+===========+====================================+
        | q        | (B, d)    | queries                            |
        | p        | (B, d)    | their positives                    |
        | negs     | (B, N, d) | N hard negatives per query, N >= 1 |
        +----------+-----------+------------------------------------+

    Returns:
        scalar: mean cross-entropy over the B queries (label 0 = the positive).

    Shapes:
        q, p: (B, d), negs: (B, N, d) -> ()

    References:
        van den Oord et al., "Representation Learning with Contrastive Predictive Coding" (InfoNCE), 2018;
        Zhang et al., "ML-Embed", ICML 2026 (hard-negative loss on every batch, t = 0.05).

    Example:
        >>> import torch, torch.nn.functional as F
        >>> q, p = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
        >>> negs = F.normalize(torch.randn(4, 7, 8), dim=-1)
        >>> hard_negative_infonce(q, p, negs).shape
        torch.Size([])
    """
    _check_temperature(temperature)
    _check_pair(q, p)
    if negs.ndim != 3 or negs.shape[0] != q.shape[0] or negs.shape[2] != q.shape[1] or negs.shape[1] < 1:
        raise ValueError(f"negs must be (B, N, d) = ({q.shape[0]}, N>=1, {q.shape[1]}), got {tuple(negs.shape)}")
    positive = (q * p).sum(-1, keepdim=True)  # (B, 1)
    negative = torch.einsum("bd,bnd->bn", q, negs)  # (B, N)
    logits = torch.cat([positive, negative], dim=1) / temperature  # (B, 1 + N)
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels)


def in_batch_infonce(
    q: torch.Tensor,
    p: torch.Tensor,
    temperature: float = 0.05,
    gather: bool = True,
    passage_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE of each query against the positives of all queries of all processes (retrieval batches).

    With `gather=True` the positives are gathered with gradient (`gather_with_grad`), so a passage also learns from
    the queries of other processes. Query i of process r has label `r * B + i`. Each process returns the mean over its
    own queries; with DDP averaging gradients over processes, training equals one process on the combined batch.

    Duplicate passages: when two rows of the (global) batch share a positive passage, each is a false negative for
    the other (a defect of the public reference code). Pass `passage_ids` (e.g. `passage_ids_from_tokens`): a
    candidate with the same id as the query's own positive is masked out of its softmax; the positive itself stays.
    Default (`None`): no masking, as in the paper.

    Formula:
        loss = mean_i -log( exp(s(q_i, p_i) / t) / sum_{j not masked for i} exp(s(q_i, p_j) / t) ),
        j over the positives of all processes, s = cosine similarity of L2-normalised vectors.

    Args:
        q: query embeddings, L2-normalised.
        p: positive passage embeddings, L2-normalised, row i belonging to query i.
        temperature: divides the similarities (a temperature, not a scale; scale = 1 / temperature).
        gather: score against the positives of all processes (no-op in a single process).
        passage_ids: integer id per positive; equal ids mark the same passage. Must be stable across processes
            (Python's `hash` of a string is not; `passage_ids_from_tokens` is).

    Inputs:
        +-------------+--------+-------------------------------------+
        | name        | shape  | content                             |
        +=============+========+=====================================+
        | q           | (B, d) | queries                             |
        | p           | (B, d) | their positives                     |
        | passage_ids | (B,)   | optional int ids of the positives   |
        +-------------+--------+-------------------------------------+

    Returns:
        scalar: mean cross-entropy over this process's B queries.

    Shapes:
        q, p: (B, d), passage_ids: (B,) -> ()

    References:
        Henderson et al., "Efficient Natural Language Response Suggestion for Smart Reply" (in-batch negatives),
        2017; Radford et al., CLIP, 2021 (gather across processes); Zhang et al., "ML-Embed", ICML 2026.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> q, p = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
        >>> ids = torch.tensor([7, 8, 7, 9])  # rows 0 and 2 share their positive
        >>> in_batch_infonce(q, p, passage_ids=ids).shape
        torch.Size([])
    """
    _check_temperature(temperature)
    _check_pair(q, p)
    labels, duplicate = in_batch_targets(q.shape[0], passage_ids, gather=gather, device=q.device)
    candidates = distributed.gather_with_grad(p) if gather else p  # (W * B, d)
    return masked_infonce(q @ candidates.T / temperature, labels, duplicate)


def in_batch_targets(
    batch_size: int, passage_ids: torch.Tensor | None = None, gather: bool = True, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Label of each local query among the (gathered) positives, and the duplicate-passage mask.

    Computed once per step and shared by every exit and dim of the 3D loss (one id gather, not one per loss).

    Shapes:
        passage_ids: (B,) -> labels: (B,) = rank * B + arange(B); duplicate: (B, W * B) bool or None, W = 1 when
        `gather` is False or there is no process group.
    """
    offset = distributed.rank() * batch_size if gather else 0
    labels = torch.arange(batch_size, device=device) + offset  # (B,)
    if passage_ids is None:
        return labels, None
    if passage_ids.shape != (batch_size,) or passage_ids.dtype.is_floating_point or passage_ids.dtype == torch.bool:
        raise ValueError(
            f"passage_ids must be an integer tensor of shape ({batch_size},), got "
            f"{passage_ids.dtype} {tuple(passage_ids.shape)}"
        )
    passage_ids = passage_ids.to(device=device, dtype=torch.long)
    all_ids = distributed.gather(passage_ids) if gather else passage_ids  # (W * B,)
    duplicate = passage_ids[:, None] == all_ids[None, :]  # (B, W * B)
    duplicate[torch.arange(batch_size, device=device), labels] = False
    return labels, duplicate


def masked_infonce(logits: torch.Tensor, labels: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy with the `exclude`d candidates removed from each softmax.

    Shapes:
        logits: (B, C), labels: (B,), exclude: (B, C) bool or None -> ()
    """
    if exclude is not None:
        logits = logits.masked_fill(exclude, float("-inf"))
    return F.cross_entropy(logits, labels)


def passage_ids_from_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Stable int64 ids of tokenised texts (equal tokens, equal ids, on every process and run), for `passage_ids`.

    Hashing the tokens the model sees (padding excluded, so either padding side gives the same id) serves every
    front end alike, and the ids are comparable across processes (Python's `hash` would not be).

    Shapes:
        input_ids, attention_mask: (B, T) -> (B,) int64 on the device of `input_ids`
    """
    rows, mask = input_ids.detach().cpu().long(), attention_mask.detach().cpu().bool()
    ids = [
        int.from_bytes(hashlib.blake2b(row[keep].numpy().tobytes(), digest_size=8).digest(), "little", signed=True)
        for row, keep in zip(rows, mask)
    ]
    return torch.tensor(ids, dtype=torch.long, device=input_ids.device)
