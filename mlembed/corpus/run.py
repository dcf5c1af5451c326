"""Encode a large corpus once, at full width, into resumable parquet shards (one process, or Ray Data).

Why this shape:

* **Full width, once.** Every MRL prefix is a cut of the full vector followed by an L2 normalisation
  (`truncate_embeddings`), so a shard stores the full-width embedding and any `dim=` is cut later (`read_corpus`)
  without re-encoding.
* **Shards by row number.** Shard i holds input rows `[i * shard_size, (i + 1) * shard_size)`, whatever the engine:
  the local engine and the Ray engine write the same files, and a shard is the unit of resumption. A shard is
  written to a temporary name and renamed, so a killed run leaves finished shards or nothing, never half a shard;
  the next run skips the finished ones.
* **Validated first.** Every row is read once before any encoding (missing columns, empty texts, duplicate ids),
  so a bad row fails in seconds and nothing already written is touched.
* **Precision through sentence-transformers.** `int8` and `binary` use `sentence_transformers.quantize_embeddings`
  (`float16` is a numpy cast: that function has no float16). int8 ranges are calibrated once, on a fixed sample of
  the corpus, and stored in the manifest, so every shard (and a resumed run) uses the same buckets.
* **A fingerprint of the model.** The manifest stores the embedding of a fixed probe text at the run's setting;
  resuming or searching with a model whose probe embedding differs is an error (`check_fingerprint`).

Output folder: `shard-00000.parquet`, ... (columns `id` and `embedding`, a fixed-size list) and `manifest.json`
(model, setting, precision, int8 ranges, input, shard list with row counts).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mlembed.corpus.encoder import EncodeJob, ShardEncoder
from mlembed.corpus.inputs import CorpusInput
from mlembed.corpus.manifest import (
    FORMAT,
    MANIFEST_NAME,
    check_fingerprint,
    check_same_run,
    read_manifest,
    shard_name,
    write_manifest,
)
from mlembed.corpus.precision import PRECISIONS, dequantize, truncate_vectors
from mlembed.corpus.ray_pool import probe_in_worker, ray_start, run_ray

logger = logging.getLogger(__name__)

ENGINES = ("local", "ray")


def encode_corpus(
    model: str,
    input_path: str | Path,
    out_dir: str | Path,
    *,
    id_column: str = "id",
    text_column: str = "text",
    layers: int | None = None,
    rank: int | None = None,
    prompt_name: str | None = "document",
    precision: str = "float32",
    shard_size: int = 100_000,
    batch_size: int = 64,
    max_length: int | None = None,
    calibration_size: int = 10_000,
    engine: str = "local",
    num_workers: int = 1,
    num_cpus_per_worker: float = 1,
    num_gpus_per_worker: float = 0,
    address: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> dict[str, Any]:
    """Encode `input_path` into `out_dir` (resuming a killed run); returns the manifest.

    `engine="local"` runs one process; `engine="ray"` runs shards on a Ray Data actor pool of `num_workers`
    (each with its own model copy, `num_cpus_per_worker` CPUs and `num_gpus_per_worker` GPUs), on a new local Ray
    instance or on the cluster at `address` ("auto": the one this machine belongs to; paths must then be on storage
    every node sees). Both write the same files.
    """
    from tqdm.auto import tqdm

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    if num_workers < 1:
        raise ValueError(f"num_workers must be a positive integer, got {num_workers}")
    out = Path(out_dir)
    source = CorpusInput(str(input_path), id_column, text_column)
    sample = source.scan(shard_size, calibration_size if precision == "int8" else 0)
    job = EncodeJob(
        model, str(out), source, precision, layers, rank, prompt_name, max_length, batch_size, device, dtype
    )
    old = read_manifest(out) if (out / MANIFEST_NAME).is_file() else None  # resuming
    if old is None and out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty and has no {MANIFEST_NAME}; choose an empty or new folder")
    job.ranges = None if old is None else old.get("int8_ranges")
    ray, started_ray = ray_start(address, num_workers * num_cpus_per_worker) if engine == "ray" else (None, False)
    try:
        encoder, manifest = _open_run(job, sample, old, ray, num_cpus_per_worker, num_gpus_per_worker)
        bounds = source.shard_bounds()
        done = _finished_shards(out, bounds, manifest)
        pending = [i for i in range(len(bounds)) if shard_name(i) not in done]

        def finished(index: int, rows: int) -> None:
            done[shard_name(index)] = rows
            manifest["shards"] = [
                {"file": shard_name(i), "first_row": bounds[i][0], "rows": done[shard_name(i)]}
                for i in range(len(bounds))
                if shard_name(i) in done
            ]
            write_manifest(out, manifest)

        with tqdm(total=source.num_rows, initial=sum(done.values()), unit="doc", desc="encode-corpus") as bar:
            if encoder is not None:
                for i in pending:
                    finished(i, encoder.encode_shard(i, progress=bar))
            else:
                run_ray(job, pending, num_workers, num_cpus_per_worker, num_gpus_per_worker, bar, finished)
    finally:
        if started_ray:  # a Ray instance this call started ends with it (no processes left behind)
            ray.shutdown()
    manifest["complete"] = True
    write_manifest(out, manifest)
    return manifest


def _open_run(
    job: EncodeJob, sample: list[str], old: dict | None, ray: Any, num_cpus: float, num_gpus: float
) -> tuple[ShardEncoder | None, dict[str, Any]]:
    """The fingerprint, resolved setting and int8 ranges (in a Ray task for the Ray engine: the driver never loads
    the model, it may have no GPU); then a new manifest, or the old one after checking this run matches it."""
    if ray is not None:
        resources = {"num_cpus": num_cpus, **({"num_gpus": num_gpus} if num_gpus else {})}
        task = ray.remote(**resources)(probe_in_worker)
        encoder, (setting, probe, ranges) = None, ray.get(task.remote(job, sample, max(1, int(num_cpus))))
        job.layers, job.rank, job.max_length = setting["layers"], setting["rank"], setting["max_length"]
    else:
        encoder = ShardEncoder(job)
        setting, probe, ranges = encoder.probe(sample)
    source = job.input
    header = {
        "format": FORMAT,
        "model": str(job.model),
        "setting": setting,
        "precision": job.precision,
        "input": {
            "path": source.path,
            "kind": source.kind,
            "id_column": source.id_column,
            "text_column": source.text_column,
            "rows": source.num_rows,
        },  # fmt: skip
        "shard_size": source.shard_size,
    }
    out = Path(job.out_dir)
    if old is not None:  # resuming: same settings, same model (nothing is touched before these checks pass)
        check_same_run(old, header, out)
        check_fingerprint(old, probe, f"model {job.model!r}")
        return encoder, old
    job.ranges = ranges
    out.mkdir(parents=True, exist_ok=True)
    manifest = {**header, "dim": len(probe), "fingerprint": probe, "int8_ranges": ranges, "shards": []}
    manifest["complete"] = False
    write_manifest(out, manifest)
    return encoder, manifest


def _finished_shards(out: Path, bounds: list[tuple[int, int]], manifest: dict[str, Any]) -> dict[str, int]:
    """Shards already written: those in the manifest, and any renamed just before a kill (whole: row count)."""
    for stale in out.glob(".shard-*.tmp"):  # a killed run's unfinished shard
        stale.unlink()
    done = {s["file"]: s["rows"] for s in manifest["shards"]}
    for i, (start, stop) in enumerate(bounds):
        name = shard_name(i)
        if name not in done and (out / name).is_file() and _rows_of(out / name) == stop - start:
            done[name] = stop - start
    if done:
        logger.info("%s: %d of %d shards already written", out, len(done), len(bounds))
    return done


def _rows_of(path: Path) -> int:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception:  # a corrupt file is not a finished shard
        return -1


def read_corpus(
    out_dir: str | Path, dim: int | None = None, batch_size: int = 65_536
) -> Iterator[tuple[list[Any], np.ndarray]]:
    """(ids, vectors) batches of a finished corpus: the first `dim` dims (default all), dequantized, L2-normalised."""
    import pyarrow.parquet as pq

    manifest = read_manifest(out_dir)
    if not manifest.get("complete"):
        raise ValueError(f"{out_dir}: the encoding has not finished; run the same encode-corpus command to resume")
    width = manifest["dim"]
    dim = width if dim is None else dim
    if not 1 <= dim <= width:
        raise ValueError(f"dim must be an integer in 1..{width}, got {dim}")
    ranges = None if manifest["int8_ranges"] is None else np.asarray(manifest["int8_ranges"], dtype=np.float32)
    for shard in manifest["shards"]:
        for batch in pq.ParquetFile(Path(out_dir) / shard["file"]).iter_batches(batch_size=batch_size):
            flat = batch.column("embedding").flatten().to_numpy(zero_copy_only=False)
            stored = flat.reshape(len(batch), -1)
            vectors = dequantize(stored, manifest["precision"], width, ranges)
            yield batch.column("id").to_pylist(), truncate_vectors(vectors, dim)
