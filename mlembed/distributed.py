"""Cross-process helpers for the 3D-ML losses, each with a single-process fallback.

Why this module exists: the in-batch loss scores every query against the positives of *all* processes, and the
public reference code gathered them without gradient, so passages got no gradient from other
processes' queries. `gather_with_grad` keeps the gradient: its backward sums, over processes, the gradient each
process computed for this process's slice.

Scale convention (what the losses and tests rely on): every process computes the *mean over its local queries*,
and DDP / DeepSpeed / FSDP average parameter gradients over processes. Because the gather's backward sums over
processes, the averaged gradient equals that of the loss of one process holding the combined batch.

Shared random choices (dataset per step, MEL rank per step) must be identical on all processes. We draw on rank 0
and broadcast the result (`shared_choice`): one tiny collective per step, correct even when processes consume their
random generators differently (e.g. a dataloader worker drawing on one process only), which identically seeded
generators cannot guarantee. Without an initialised process group every helper works locally.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TypeVar

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)
T = TypeVar("T")


def is_distributed() -> bool:
    """True when a process group is initialised (the helpers below then communicate)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes, 1 without a process group."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank, 0 without a process group."""
    return dist.get_rank() if is_distributed() else 0


def close() -> None:
    """Tear the process group down before the process exits: a collective backend's threads still alive at
    interpreter exit can abort a finished run ("terminate called without an active exception", seen with ZeRO-3)."""
    if is_distributed():
        dist.destroy_process_group()


def collective_device() -> torch.device:
    """Device for small control tensors: the current GPU under NCCL (which cannot send CPU tensors), else CPU."""
    if is_distributed() and "nccl" in str(dist.get_backend()) and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _check_same_shape(x: torch.Tensor) -> None:
    """All processes must gather equal shapes (the label offset is rank * local batch); fail instead of hanging."""
    shape = torch.tensor(x.shape, dtype=torch.long, device=x.device)
    shapes = [torch.empty_like(shape) for _ in range(world_size())]
    dist.all_gather(shapes, shape)
    if any(not torch.equal(s, shapes[0]) for s in shapes):
        raise ValueError(
            f"all processes must gather tensors of the same shape (equal local batch sizes), got "
            f"{[tuple(s.tolist()) for s in shapes]}; drop the last incomplete batch"
        )


def gather_with_grad(x: torch.Tensor, check_shapes: bool = True) -> torch.Tensor:
    """Concatenate `x` from all processes in rank order; the local slice keeps its gradient.

    The backward pass sums, over processes, the gradients of this process's slice, so a passage also receives the
    gradient from the queries of other processes. Without a process group `x` is returned unchanged.

    Args:
        x: this process's tensor; same shape on every process.
        check_shapes: verify equal shapes first (one extra tiny collective) and raise a clear error.

    Shapes:
        x: (B, ...) -> (world_size * B, ...), rows [rank * B, (rank + 1) * B) being `x` itself.
    """
    if world_size() == 1:
        return x
    if check_shapes:
        _check_same_shape(x)
    try:  # what torch's deprecation notice for nn.functional.all_gather points to; differentiable
        from torch.distributed._functional_collectives import all_gather_single
    except ImportError:  # older torch: the public differentiable gather
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(x.contiguous()), dim=0)
    out = all_gather_single(x.contiguous(), 0, dist.group.WORLD)
    return out.wait() if hasattr(out, "wait") else out


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from all processes in rank order, without gradient (ids, labels).

    Shapes:
        x: (B, ...) -> (world_size * B, ...).
    """
    if world_size() == 1:
        return x
    _check_same_shape(x)
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def broadcast_int(value: int, src: int = 0) -> int:
    """Rank `src`'s `value` on every process (unchanged without a process group)."""
    if world_size() == 1:
        return int(value)
    tensor = torch.tensor([int(value)], dtype=torch.long, device=collective_device())
    dist.broadcast(tensor, src=src)
    return int(tensor.item())


def shared_choice(
    options: Sequence[T], weights: Sequence[float] | None = None, generator: torch.Generator | None = None
) -> T:
    """Draw one of `options` (probability proportional to `weights`) on rank 0; every process gets the same one.

    Args:
        options: the candidates (any objects; only the index travels).
        weights: non-negative, not all zero; `None` = uniform.
        generator: CPU generator used on rank 0 (other processes ignore theirs), for reproducible runs.
    """
    if len(options) == 0:
        raise ValueError("options must not be empty")
    probs = (
        torch.ones(len(options), dtype=torch.float64)
        if weights is None
        else torch.as_tensor(weights, dtype=torch.float64)
    )
    if probs.shape != (len(options),):
        raise ValueError(f"weights must have one entry per option ({len(options)}), got {len(probs)}")
    if not torch.isfinite(probs).all() or (probs < 0).any() or probs.sum() <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {list(weights or [])}")
    index = 0
    if rank() == 0:
        index = int(torch.multinomial(probs, 1, generator=generator).item())
    return options[broadcast_int(index)]
