"""The flat batch the objective reads: tokenised columns `[queries; positives; negative_1; ...]` stacked into one
batch, embedded in two passes of their own widths (queries; the passage-side columns: `side_batches`), and split back
into columns."""

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


def side_batches(batch: Mapping[str, torch.Tensor], num_columns: int) -> list[dict[str, torch.Tensor]]:
    """The passes that embed a flat column batch: the queries, then the passages and negatives, each cut to its own
    longest row; the flat batch itself when neither side is narrower.

    A query is shorter than a passage, and one flat pass pads it to the passages' width: in ml-embed-mini's Debian
    batches (instruction prompt included, 64 tokens at most) two passes run 0.90x the tokens and take 0.89x the
    step time (`bench/column_passes.py`). Padding is masked, so the embeddings are the same up to float rounding
    (and, in training mode, other dropout draws).

    Shapes:
        batch["input_ids"], batch["attention_mask"]: (C * B, T) -> one (C * B, T) batch, or (B, T_q) and
        ((C - 1) * B, T_p) with T_q, T_p <= T
    """
    rows = batch["input_ids"].shape[0]
    if not isinstance(num_columns, int) or num_columns < 2 or rows % num_columns:
        raise ValueError(f"a flat batch of {num_columns} columns needs a multiple of {num_columns} rows, got {rows}")
    size, width = rows // num_columns, batch["input_ids"].shape[1]
    sides = [_trimmed({k: v[:size] for k, v in batch.items()}), _trimmed({k: v[size:] for k, v in batch.items()})]
    if all(side["input_ids"].shape[1] == width for side in sides):
        return [dict(batch)]
    return sides


def embed_by_side(
    embed: Callable[..., Mapping[int, torch.Tensor]],
    passes: Sequence[Mapping[str, torch.Tensor]],
    rank: int | None,
    layers: int | None = None,
) -> dict[int, torch.Tensor]:
    """`embed(batch, rank[, layers=])` of each of `passes` (`side_batches`), the rows put back in the flat batch's
    order.

    Shapes:
        passes[i]["input_ids"]: (R_i, T_i) -> {exit: (sum R_i, d)}
    """
    kwargs = {} if layers is None else {"layers": layers}
    out = [embed(dict(batch), rank, **kwargs) for batch in passes]
    if len(out) == 1:
        return dict(out[0])
    return {layer: torch.cat([o[layer] for o in out]) for layer in out[0]}


def _trimmed(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The token tensors without the trailing columns that no row uses (right padding; left padding is kept)."""
    used = batch["attention_mask"].any(dim=0).nonzero()
    width = int(used.max()) + 1 if used.numel() else 1
    return {k: v[:, :width] if v.ndim == 2 else v for k, v in batch.items()}
