"""The flat batch the objective reads: tokenised columns `[queries; positives; negative_1; ...]` stacked into one
batch for one forward pass, and the embeddings split back into columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
