"""The axes of one training step: the MRL dims and their weights, the MLL exits and their weights, the MEL rank.

The checks raise errors that name the allowed values; the rank is drawn on process 0 and shared, so every process
embeds a step at the same rank.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mlembed import distributed


def mrl_weights(dims: Sequence[int], full_dim: int | None = None) -> dict[int, float]:
    """Loss weight of each MRL dim: 1 / (n sqrt(full_dim / d')), n = 1, 2, ... over the dims sorted descending.

    Larger prefixes weigh more; with `full_dim` 1024 and dims 1024 ... 8 the weights are 1, .354, .167, .088, .050,
    .030, .018, .011 (ML-Embed, as in its reference code).

    Args:
        dims: the MRL dims trained (any order, unique).
        full_dim: the embedding width d; default `max(dims)`.

    Returns:
        {dim: weight}, dims in descending order.
    """
    if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"dims must be a non-empty list of positive integers, got {list(dims)!r}")
    if len(set(dims)) != len(dims):
        raise ValueError(f"dims must be unique, got {list(dims)}")
    full_dim = max(dims) if full_dim is None else full_dim
    if max(dims) > full_dim:
        raise ValueError(f"dims must lie in 1..full_dim={full_dim}, got {sorted(dims)}")
    ordered = sorted(dims, reverse=True)
    return {d: 1.0 / (n * math.sqrt(full_dim / d)) for n, d in enumerate(ordered, start=1)}


def sample_mel_rank(
    ranks: Sequence[int], generator: torch.Generator | None = None, weights: Mapping[int, float] | None = None
) -> int:
    """The MEL rank for this step: k with probability k / sum(ranks) (the paper), or weights[k] / sum(weights)
    (`check_rank_weights`), the same on every process.

    Drawn on rank 0 and broadcast (`mlembed.distributed.shared_choice`), so all processes embed with the
    same rank even when their generators differ. r=512 gives 512 .533, 256 .267, 128 .133, 64 .067.
    """
    if not ranks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ranks):
        raise ValueError(f"ranks must be a non-empty list of positive integers (e.g. config.mel_ranks), got {ranks!r}")
    ranks = sorted(set(ranks))
    chances = ranks if weights is None else [check_rank_weights(weights, ranks)[k] for k in ranks]
    return distributed.shared_choice(ranks, weights=chances, generator=generator)


def check_rank_weights(weights: Mapping[Any, float], ranks: Sequence[int]) -> dict[int, float]:
    """{MEL rank: sampling weight} for exactly the trained `ranks`, weights >= 0, not all 0 (ValueError naming the
    ranks otherwise); integer keys."""
    try:
        chosen = {int(k): float(v) for k, v in weights.items()}
    except (TypeError, ValueError):
        raise ValueError(f"rank weights must map MEL ranks to numbers, got {weights!r}") from None
    if sorted(chosen) != sorted(set(ranks)) or any(not v >= 0 for v in chosen.values()) or not sum(chosen.values()):
        raise ValueError(
            f"rank weights must give every trained MEL rank {sorted(set(ranks))} a weight >= 0 (not all 0), "
            f"got {weights!r}"
        )
    return chosen


def check_exits(exit_q: Mapping, exit_p: Mapping, exit_negs: Mapping | None, exits: Sequence[int] | None) -> list:
    available = sorted(exit_q)
    if not available:
        raise ValueError("exit_q is empty; call the model with exits=True")
    if sorted(exit_p) != available or (exit_negs is not None and sorted(exit_negs) != available):
        raise ValueError(
            f"exit_q, exit_p and exit_negs must have the same exit layers, got {available}, "
            f"{sorted(exit_p)}, {None if exit_negs is None else sorted(exit_negs)}"
        )
    chosen = available if exits is None else sorted(set(exits))
    if not chosen or any(layer not in available for layer in chosen):
        raise ValueError(f"exits must be a non-empty subset of the exit layers given {available}, got {exits!r}")
    return chosen


def check_dims(dims: Sequence[int], width: int, weights: Mapping[int, float] | None) -> dict[int, float]:
    if not dims or any(isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= width for d in dims):
        raise ValueError(
            f"dims must be a non-empty list of integers in 1..{width} (the embedding width), got {dims!r}"
        )
    if weights is None:
        return mrl_weights(list(dict.fromkeys(dims)), full_dim=width)
    missing = [d for d in dims if d not in weights]
    if missing:
        raise ValueError(f"weights must give a weight for every dim in {sorted(set(dims))}, missing {missing}")
    return {d: float(weights[d]) for d in sorted(set(dims), reverse=True)}


def check_exit_weights(exit_weights: Mapping[int, float] | None, chosen: Sequence[int]) -> dict[int, float]:
    """{exit: weight} for the chosen exits; missing exits weigh 1, weights must be >= 0 and not all 0."""
    exit_weights = dict(exit_weights or {})
    unknown = sorted(set(exit_weights) - set(chosen))
    if unknown:
        raise ValueError(f"exit_weights name exits {unknown} outside the exits used {list(chosen)}")
    by_exit = {layer: float(exit_weights.get(layer, 1.0)) for layer in chosen}
    if any(not math.isfinite(w) or w < 0 for w in by_exit.values()) or not sum(by_exit.values()) > 0:
        raise ValueError(f"exit_weights must be finite, >= 0 and not all 0, got {exit_weights}")
    return by_exit


def check_exit_dims(
    exit_dims: Mapping[int, Sequence[int]] | None, chosen: Sequence[int], width: int, weights: dict[int, float]
) -> dict[int, dict[int, float]]:
    """{exit: {dim: weight}}: the listed exits' own dims (weight 1 each, Starbucks-style diagonal pairs), every other
    exit all dims and weights."""
    exit_dims = dict(exit_dims or {})
    unknown = sorted(set(exit_dims) - set(chosen))
    if unknown:
        raise ValueError(f"exit_dims name exits {unknown} outside the exits used {list(chosen)}")
    for layer, dims in exit_dims.items():
        if not dims or any(isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= width for d in dims):
            raise ValueError(f"exit_dims[{layer}] must be a non-empty list of integers in 1..{width}, got {dims!r}")
    return {layer: {d: 1.0 for d in exit_dims[layer]} if layer in exit_dims else weights for layer in chosen}
