"""Two CPU processes (gloo) against one process on the combined batch: losses and gradients must agree.

Scale convention checked here: each process returns the mean over its local queries; DDP averages gradients over
the W processes, so every local gradient divided by W must equal the single-process gradient of the combined batch.
"""

from __future__ import annotations

import multiprocessing
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from conftest import free_port

from mlembed import distributed
from mlembed.losses import in_batch_infonce, sample_mel_rank, three_d_loss

WORLD, LOCAL, WIDTH, T = 2, 3, 8, 0.05
IDS = torch.tensor([1, 2, 3, 4, 2, 6])  # passage 2 is the positive of query 1 (process 0) and query 4 (process 1)


def _batch(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    q, p = (torch.randn(WORLD * LOCAL, WIDTH, generator=g, dtype=torch.float64) for _ in range(2))
    negs = torch.randn(WORLD * LOCAL, 2, WIDTH, generator=g, dtype=torch.float64)
    return q, p, negs


def _leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def _mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / WORLD


def _check_in_batch(rank: int) -> None:
    """Loss, query and passage gradients of the gathered in-batch loss equal the combined batch's."""
    q, p, _ = _batch()
    q, p = F.normalize(q, dim=-1), F.normalize(p, dim=-1)
    local = slice(rank * LOCAL, (rank + 1) * LOCAL)
    full_q, full_p = _leaves(q, p)
    logits = (full_q @ full_p.T / T).masked_fill(
        (IDS[:, None] == IDS[None]) & ~torch.eye(len(IDS), dtype=torch.bool), -torch.inf
    )
    per_query = F.cross_entropy(logits, torch.arange(len(IDS)), reduction="none")  # (W * B,) straightforward
    per_query.mean().backward(retain_graph=True)
    own_part = torch.autograd.grad(per_query[local].sum() / len(IDS), full_p)[0][local]

    local_q, local_p = _leaves(q[local], p[local])
    loss = in_batch_infonce(local_q, local_p, temperature=T, passage_ids=IDS[local])
    loss.backward()
    torch.testing.assert_close(_mean_over_processes(loss), per_query.mean().detach())
    torch.testing.assert_close(local_q.grad / WORLD, full_q.grad[local])
    torch.testing.assert_close(local_p.grad / WORLD, full_p.grad[local])
    from_other_queries = local_p.grad / WORLD - own_part  # what a non-differentiable gather would drop
    assert from_other_queries.abs().sum() > 1e-3


def _check_three_d(rank: int) -> None:
    """The full 3D loss (2 exits, 3 dims, hard negatives, duplicate masking) under 2 processes vs one."""
    local = slice(rank * LOCAL, (rank + 1) * LOCAL)
    exits = {layer: _batch(seed=layer) for layer in (2, 4)}
    leaves = {layer: _leaves(*tensors) for layer, tensors in exits.items()}
    full, _ = three_d_loss(
        *({l: t[i] for l, t in leaves.items()} for i in range(2)),
        [8, 4, 2],
        exit_negs={l: t[2] for l, t in leaves.items()},
        passage_ids=IDS,
        gather=False,
    )
    full.backward()
    mine = {layer: _leaves(*(t[local] for t in tensors)) for layer, tensors in exits.items()}
    loss, _ = three_d_loss(
        *({l: t[i] for l, t in mine.items()} for i in range(2)),
        [8, 4, 2],
        exit_negs={l: t[2] for l, t in mine.items()},
        passage_ids=IDS[local],
    )
    loss.backward()
    torch.testing.assert_close(_mean_over_processes(loss), full.detach())
    for layer in exits:
        for got, want in zip(mine[layer], leaves[layer]):
            torch.testing.assert_close(got.grad / WORLD, want.grad[local])


def _check_shared_choices(rank: int) -> None:
    """Processes with different generators still draw the same ranks; broadcast takes rank 0's value."""
    generator = torch.Generator().manual_seed(100 + rank)
    draws = torch.tensor([sample_mel_rank([64, 128, 256, 512], generator) for _ in range(32)])
    gathered = distributed.gather(draws)
    assert torch.equal(gathered[:32], gathered[32:]) and len(set(draws.tolist())) > 1
    assert distributed.broadcast_int(10 + rank) == 10
    assert (distributed.world_size(), distributed.rank()) == (WORLD, rank)


def _check_unequal_batches(rank: int) -> None:
    with pytest.raises(ValueError, match=r"same shape \(equal local batch sizes\), got \[\(3, 8\), \(2, 8\)\]"):
        distributed.gather_with_grad(torch.zeros(LOCAL - rank, WIDTH))


def _worker(rank: int, port: int) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    try:
        _check_in_batch(rank)
        _check_three_d(rank)
        _check_shared_choices(rank)
        _check_unequal_batches(rank)
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one_process():
    # Not fork: a parent that already ran torch ops (OpenMP pool) can deadlock its forked children. A fork server
    # starts clean, imports this module once and forks both workers from it (spawn would import it twice).
    multiprocessing.get_context("forkserver").set_forkserver_preload([__name__])
    mp.start_processes(_worker, args=(free_port(),), nprocs=WORLD, join=True, start_method="forkserver")


def test_single_process_fallbacks():
    x = torch.randn(3, 4, requires_grad=True)
    assert distributed.gather_with_grad(x) is x and distributed.gather(x) is x
    assert (distributed.world_size(), distributed.rank(), distributed.broadcast_int(7)) == (1, 0, 7)
    assert distributed.shared_choice(["only"]) == "only"
    assert distributed.collective_device() == torch.device("cpu")
