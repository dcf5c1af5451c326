"""The flat batch the objective reads: tokenised columns `[queries; positives; negative_1; ...]` stacked into one
batch, embedded in two passes of their own widths (queries; the passage-side columns), and split back into columns."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F


def as_negatives(negs: torch.Tensor, batch: int, width: int) -> torch.Tensor:
    """(B, N, d) as given, or (B * N, d) with query i's negatives in rows i*N .. i*N + N - 1, to (B, N, d)."""
    if negs.ndim == 2 and negs.shape[0] % batch == 0 and negs.shape[0] >= batch and negs.shape[1] == width:
        return negs.reshape(batch, negs.shape[0] // batch, width)
    if negs.ndim == 3 and negs.shape[0] == batch and negs.shape[1] >= 1 and negs.shape[2] == width:
        return negs
    raise ValueError(f"negatives must be (B, N, d) or (B * N, d) with B={batch}, d={width}, got {tuple(negs.shape)}")


def flat_columns(flat: torch.Tensor, num_columns: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(queries, positives, negatives or None) of one flat (C * B, D) embedding batch."""
    q, p, n = split_columns({0: flat}, num_columns)
    return q[0], p[0], None if n is None else n[0]


def split_columns(
    exit_embeddings: Mapping[int, torch.Tensor], num_columns: int
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], dict[int, torch.Tensor] | None]:
    """Queries, positives and negatives (B, N, d) of a flat column batch, per exit.

    Shapes:
        exit_embeddings[l]: (C * B, d) -> q[l], p[l]: (B, d); negs[l]: (B, C - 2, d), or None when C = 2.
    """
    if not isinstance(num_columns, int) or num_columns < 2:
        raise ValueError(f"num_columns must be an integer >= 2 (queries, positives[, negatives]), got {num_columns!r}")
    q, p, n = {}, {}, {}
    for layer, emb in exit_embeddings.items():
        if emb.ndim != 2 or emb.shape[0] % num_columns:
            raise ValueError(
                f"exit {layer}: embeddings must be (num_columns * B, d) with num_columns={num_columns}, "
                f"got {tuple(emb.shape)}"
            )
        columns = emb.unflatten(0, (num_columns, -1))  # (C, B, d)
        q[layer], p[layer] = columns[0], columns[1]
        if num_columns > 2:
            n[layer] = columns[2:].transpose(0, 1)  # (B, N, d)
    return q, p, (n if num_columns > 2 else None)


def stack_columns(columns: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Tokenised columns (each B rows, own width) as one right-padded flat batch, the layout `ThreeDObjective` reads.

    Shapes:
        columns[c]["input_ids"]: (B, T_c) -> input_ids, attention_mask[, token_type_ids]: (C * B, max T_c)
    """
    if not columns:
        raise ValueError("columns must not be empty")
    rows = {c["input_ids"].shape[0] for c in columns}
    if len(rows) != 1:
        raise ValueError(f"every column needs the same number of rows, got {sorted(rows)}")
    width = max(c["input_ids"].shape[1] for c in columns)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if all(k in c for c in columns)]
    return {key: torch.cat([F.pad(c[key], (0, width - c[key].shape[1]), value=0) for c in columns]) for key in keys}


def embed_by_side(
    embed: Callable[..., Mapping[int, torch.Tensor]],
    batch: Mapping[str, torch.Tensor],
    num_columns: int,
    rank: int | None,
    layers: int | None = None,
) -> dict[int, torch.Tensor]:
    """`embed(batch, rank[, layers=])` of a flat column batch, run as two passes each cut to its own longest row: the
    queries, then the passages and negatives.

    A query is shorter than a passage, and one flat pass pads it to the passages' width: in ml-embed-mini's Debian
    batches (instruction prompt included, 64 tokens at most) two passes run 0.90x the tokens and take 0.89x the
    step time (`bench/column_passes.py`). Padding is masked, so the embeddings are the same up to float rounding
    (and, in training mode, other dropout draws). When neither side is narrower than the flat batch, it is the one
    pass it was.

    Shapes:
        batch["input_ids"], batch["attention_mask"]: (C * B, T) -> {exit: (C * B, d)}
    """
    rows = batch["input_ids"].shape[0]
    if num_columns < 2 or rows % num_columns:
        raise ValueError(f"a flat batch of {num_columns} columns needs a multiple of {num_columns} rows, got {rows}")
    kwargs = {} if layers is None else {"layers": layers}
    size, width = rows // num_columns, batch["input_ids"].shape[1]
    sides = [_trimmed({k: v[:size] for k, v in batch.items()}), _trimmed({k: v[size:] for k, v in batch.items()})]
    if all(side["input_ids"].shape[1] == width for side in sides):
        return dict(embed(dict(batch), rank, **kwargs))
    out = [embed(side, rank, **kwargs) for side in sides]
    return {layer: torch.cat([out[0][layer], out[1][layer]]) for layer in out[0]}


def _trimmed(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The token tensors without the trailing columns that no row uses (right padding; left padding is kept)."""
    used = batch["attention_mask"].any(dim=0).nonzero()
    width = int(used.max()) + 1 if used.numel() else 1
    return {k: v[:, :width] if v.ndim == 2 else v for k, v in batch.items()}
