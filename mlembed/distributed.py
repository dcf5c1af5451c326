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

import gc
import logging
import sys
import types
from collections.abc import Sequence
from pathlib import Path
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


def close() -> list[str]:
    """Destroy every process group and free it, so that its threads end while the interpreter is fully alive.

    Why: `dist.destroy_process_group` only unregisters the groups. A gloo group's worker threads end in the group's
    C++ destructor, i.e. when the last reference goes, and references stay: DeepSpeed's group cache, the world
    group bound as a default argument by modules imported after it was made, and through the model (which ZeRO-3
    leaves in `FWD_MODULE_STACK` for good) the parameters' `ds_process_group`. Left alive, a worker thread can drop
    the last reference to a finished collective's tensor while the interpreter finalizes; the tensor's Python
    object then needs the GIL, CPython ends such a thread with `pthread_exit`, and its unwinding through a C++
    destructor calls `std::terminate`: "terminate called without an active exception", SIGABRT, after a run that
    had finished (https://github.com/python/cpython/issues/87135; https://github.com/pytorch/pytorch/issues/190489).

    Returns:
        the names of gloo threads still alive afterwards (empty when the teardown was complete; Linux only).
    """
    if not is_distributed():
        return []
    deepspeed_comm = sys.modules.get("deepspeed.comm")
    if deepspeed_comm is not None and deepspeed_comm.is_initialized():
        deepspeed_comm.destroy_process_group()  # torch's, then DeepSpeed drops its cached groups
    else:
        dist.destroy_process_group()
    _drop_module_references()
    gc.collect()  # the trainer, engine and model are garbage in reference cycles; freeing them frees the groups
    left = gloo_threads()
    if left:
        logger.warning(
            "%d gloo threads outlive the process groups (something still references a group): %s; the process may "
            "abort at exit",
            len(left),
            ", ".join(left),
        )
    return left


def _drop_module_references() -> None:
    """Empty the module-level places where torch and DeepSpeed keep a process group, or a model holding one."""
    # `group=group.WORLD` defaults are bound when the module is imported; imported after the group was made (e.g.
    # DeepSpeed's backend when accelerate starts gloo itself), they keep it. Both modules read None as WORLD.
    for name in ("torch.distributed.nn.functional", "deepspeed.comm.torch"):
        module = sys.modules.get(name)
        if module is None:
            continue
        namespaces = [vars(module), *(vars(c) for c in vars(module).values() if isinstance(c, type))]
        for function in (f for ns in namespaces for f in ns.values() if isinstance(f, types.FunctionType)):
            defaults = function.__defaults__ or ()
            if any(isinstance(d, dist.ProcessGroup) for d in defaults):
                function.__defaults__ = tuple(None if isinstance(d, dist.ProcessGroup) else d for d in defaults)
    offload = sys.modules.get("deepspeed.runtime.zero.parameter_offload")
    if offload is not None:  # ZeRO-3 pushes the top module when it is set up and never pops it
        offload.FWD_MODULE_STACK.clear()
    coordinator = sys.modules.get("deepspeed.runtime.zero.partitioned_param_coordinator")
    if coordinator is not None:  # an unbounded `functools.lru_cache` on a method keeps every coordinator (`self`)
        cls = coordinator.PartitionedParameterCoordinator
        method = vars(cls).get("_PartitionedParameterCoordinator__params_to_release")
        for cell in getattr(method, "__closure__", None) or ():  # the cache sits under an NVTX wrapper
            if hasattr(cell.cell_contents, "cache_clear"):
                cell.cell_contents.cache_clear()


def gloo_threads() -> list[str]:
    """Names of this process's live gloo threads (`pt_gloo_runloop`, `gloo_tcp_loop`); empty where /proc is absent.

    Native threads do not show in `threading.enumerate()`; the kernel lists them all."""
    names = []
    for comm in Path("/proc/self/task").glob("*/comm"):
        try:
            name = comm.read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        if "gloo" in name:
            names.append(name)
    return sorted(names)


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
