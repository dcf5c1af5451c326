"""How a shard stores its vectors (float32, float16, int8, binary) and how they come back, and the MRL cut of stored
vectors (`truncate_vectors`). int8 and binary go through `sentence_transformers.quantize_embeddings` (float16 is a
numpy cast: that function has no float16)."""

from __future__ import annotations

import numpy as np

PRECISIONS = ("float32", "float16", "int8", "binary")


def calibration_ranges(embeddings: np.ndarray) -> np.ndarray:
    """(2, D) per-dimension minimum and maximum: the ranges `quantize_embeddings` computes from calibration data."""
    return np.vstack((embeddings.min(axis=0), embeddings.max(axis=0))).astype(np.float32)


def quantize(embeddings: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """(N, D) float embeddings -> the stored array: float32 / float16 (N, D), int8 (N, D), binary (N, ceil(D/8))."""
    if precision == "float32":
        return embeddings.astype(np.float32)
    if precision == "float16":
        return embeddings.astype(np.float16)
    if precision not in ("int8", "binary"):
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    from sentence_transformers import quantize_embeddings

    if precision == "int8" and ranges is None:
        raise ValueError("int8 needs calibration ranges (calibration_ranges of a sample of the corpus)")
    return quantize_embeddings(embeddings.astype(np.float32), precision=precision, ranges=ranges)


def dequantize(stored: np.ndarray, precision: str, width: int, ranges: np.ndarray | None = None) -> np.ndarray:
    """The stored array back to (N, width) float32 vectors (not normalised).

    int8 values map to the middle of their bucket (`quantize_embeddings` floors); binary bits map to +-1.
    """
    if precision in ("float32", "float16"):
        return stored.astype(np.float32)
    if precision == "int8":
        starts, steps = ranges[0], (ranges[1] - ranges[0]) / 255
        steps = np.where(steps == 0, 1, steps)
        return ((stored.astype(np.float32) + 128.5) * steps + starts).astype(np.float32)
    if precision == "binary":
        bits = np.unpackbits((stored.astype(np.int16) + 128).astype(np.uint8), axis=-1)[:, :width]
        return bits.astype(np.float32) * 2 - 1
    raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")


def truncate_vectors(vectors: np.ndarray, dim: int) -> np.ndarray:
    """The MRL cut of stored vectors: `truncate_embeddings` (the first `dim` values, L2-normalised) on a numpy array,
    so a prefix read from a corpus is cut exactly as the model's `dim=` cuts.

    Shapes:
        vectors: (N, D) -> (N, dim) float32
    """
    import torch

    from modeling_mlembed import truncate_embeddings

    cut = torch.from_numpy(np.array(vectors[:, :dim], dtype=np.float32))  # a copy of the prefix only  # (N, dim)
    return truncate_embeddings(cut, dim).numpy()
