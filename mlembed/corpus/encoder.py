"""One model per process: texts to full-width vectors, and whole shards written atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlembed.corpus.inputs import CorpusInput
from mlembed.corpus.manifest import FORMAT, PROBE_TEXT, shard_name, write_manifest
from mlembed.corpus.precision import calibration_ranges, quantize

_CHUNK_BATCHES = 16  # batches per `encode` call: the step of the progress bar


@dataclass
class EncodeJob:
    """Everything a worker needs to encode shards (picklable: Ray sends it to every actor)."""

    model: str
    out_dir: str
    input: CorpusInput
    precision: str = "float32"
    layers: int | None = None
    rank: int | None = None
    prompt_name: str | None = None
    max_length: int | None = None
    batch_size: int = 64
    device: str | None = None
    dtype: str | None = None
    ranges: list[list[float]] | None = None


class ShardEncoder:
    """Loads the model once; encodes texts with length-sorted batches and writes whole shards atomically."""

    def __init__(self, job: EncodeJob, threads: int | None = None) -> None:
        import torch

        from modeling_mlembed import MLEmbedModel

        if threads:
            torch.set_num_threads(threads)
        self.job = job
        device = job.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = job.dtype or "auto"
        if dtype == "auto":  # bf16 on a GPU (the throughput setting), fp32 on a CPU (where bf16 is slower)
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        self.model = MLEmbedModel.from_pretrained(job.model, dtype=getattr(torch, dtype)).to(device).eval()
        # the manifest records the resolved setting (a bad one fails here, before any shard), so `layers=None` and
        # `layers=<all>` are one setting, and `max_length=None` is the model's `max_seq_length` spelled out
        job.layers, _, job.rank = self.model.resolve_axes(job.layers, None, job.rank)
        if job.max_length is None:  # encode's own default: the model's max_seq_length
            job.max_length = int(self.model.config.sequence_length)

    @property
    def width(self) -> int:
        return int(self.model.config.hidden_size)

    def embed(self, texts: Sequence[str], prompt_name: str | None = None, progress: Any = None) -> np.ndarray:
        """(N, D) full-width float32 embeddings, L2-normalised. The texts are sorted by length once, here, and handed
        to `encode` in chunks of `_CHUNK_BATCHES` batches (the progress step) that are in order already, so `encode`
        batches them as they come."""
        from modeling_mlembed import length_sorted_batches

        job = self.job
        out = np.zeros((len(texts), self.width), dtype=np.float32)
        for idx in length_sorted_batches(texts, job.batch_size * _CHUNK_BATCHES):
            out[idx] = self.model.encode(
                [texts[i] for i in idx],
                layers=job.layers,
                rank=job.rank,
                prompt_name=prompt_name,
                batch_size=job.batch_size,
                max_length=job.max_length,
            )
            if progress is not None:
                progress.update(len(idx))
        return out

    def setting(self) -> dict[str, Any]:
        job = self.job
        return {"layers": job.layers, "rank": job.rank, "prompt_name": job.prompt_name, "max_length": job.max_length}

    def fingerprint(self) -> list[float]:
        return [round(float(x), 6) for x in self.embed([PROBE_TEXT], self.job.prompt_name)[0]]

    def probe(self, sample: list[str]) -> tuple[dict[str, Any], list[float], Any]:
        """What a run records before its first shard: the resolved setting, the fingerprint (the probe text's
        embedding) and, for a new int8 run, the calibration ranges of `sample`."""
        job = self.job
        ranges = job.ranges
        if job.precision == "int8" and ranges is None:
            ranges = calibration_ranges(self.embed(sample, job.prompt_name)).tolist()
        return self.setting(), self.fingerprint(), ranges

    def encode_shard(self, index: int, progress: Any = None) -> int:
        """Encode shard `index` and write it (`write_shard`); returns its row count."""
        job = self.job
        ids, texts = job.input.read_shard(index)
        emb = self.embed(texts, job.prompt_name, progress)
        ranges = None if job.ranges is None else np.asarray(job.ranges, dtype=np.float32)
        write_shard(job.out_dir, index, ids, quantize(emb, job.precision, ranges), job.input.int_ids)
        return len(ids)


def write_shard(out_dir: str | Path, index: int, ids: Sequence[Any], stored: np.ndarray, int_ids: bool) -> None:
    """One shard: written under a temporary name, then renamed (atomic on POSIX: a reader, or a resumed run,
    never sees half a shard)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = pa.FixedSizeListArray.from_arrays(pa.array(stored.reshape(-1)), stored.shape[1])
    id_array = pa.array(ids, pa.int64()) if int_ids else pa.array([str(i) for i in ids], pa.string())
    final = Path(out_dir) / shard_name(index)
    tmp = final.with_name(f".{final.name}.tmp")
    pq.write_table(pa.table({"id": id_array, "embedding": values}), tmp)
    os.replace(tmp, final)


def write_vectors(
    out_dir: str | Path,
    vectors: np.ndarray,
    ids: Sequence[Any] | None = None,
    precision: str = "float32",
    shard_size: int = 100_000,
    model: str = "synthetic",
) -> dict[str, Any]:
    """A corpus folder from ready-made unit vectors (N, D) (benchmarks, tests): the layout `encode_corpus` writes,
    with the vector of row 0 as the fingerprint."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = list(range(len(vectors))) if ids is None else list(ids)
    ranges = calibration_ranges(vectors) if precision == "int8" else None
    shards = []
    for index, start in enumerate(range(0, len(vectors), shard_size)):
        stop = min(start + shard_size, len(vectors))
        stored = quantize(vectors[start:stop], precision, ranges)
        write_shard(out, index, ids[start:stop], stored, all(isinstance(i, int) for i in ids))
        shards.append({"file": shard_name(index), "first_row": start, "rows": stop - start})
    manifest = {
        "format": FORMAT,
        "model": model,
        "setting": {"layers": None, "rank": None, "prompt_name": None, "max_length": None},
        "precision": precision,
        "input": {"path": None, "kind": "vectors", "id_column": None, "text_column": None, "rows": len(vectors)},
        "shard_size": shard_size,
        "dim": int(vectors.shape[1]),
        "fingerprint": [round(float(x), 6) for x in vectors[0]],
        "int8_ranges": None if ranges is None else ranges.tolist(),
        "shards": shards,
        "complete": True,
    }
    write_manifest(out, manifest)
    return manifest
