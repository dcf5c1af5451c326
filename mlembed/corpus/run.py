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

import json
import logging
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

FORMAT = "mlembed-corpus/1"
MANIFEST_NAME = "manifest.json"
PRECISIONS = ("float32", "float16", "int8", "binary")
ENGINES = ("local", "ray")
PROBE_TEXT = "ML-Embed corpus fingerprint: the quick brown fox jumps over the lazy dog."
PROBE_MIN_COSINE = 0.99  # bf16 on a GPU against fp32 on a CPU stays above 0.999; another model or setting does not
_SCAN_BATCH = 65_536


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


# ------------------------------------------------------------------------------------------------------ input
@dataclass
class CorpusInput:
    """A JSONL file, a parquet file or folder, or a Hugging Face dataset saved to disk, with id and text columns.

    Picklable (Ray workers receive it); each process opens the files itself. `scan` validates every row and records
    where each shard starts; `read_shard` then reads one shard's rows.
    """

    path: str
    id_column: str = "id"
    text_column: str = "text"
    kind: str = ""
    num_rows: int = 0
    shard_size: int = 0
    jsonl_starts: list[tuple[int, int]] = field(default_factory=list)  # per shard: (byte offset, line number)
    int_ids: bool = True  # all ids are integers (stored as int64), else every id is stored as a string
    _dataset: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.kind:
            self.kind = _detect_kind(Path(self.path))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_dataset": None}

    def scan(self, shard_size: int, calibration_size: int = 0, seed: int = 0) -> list[str]:
        """Validate every row, count them and mark shard starts; returns a fixed random sample of texts."""
        if shard_size < 1:
            raise ValueError(f"shard_size must be a positive integer, got {shard_size}")
        self.shard_size = shard_size
        self.int_ids = True
        rng = random.Random(seed)
        sample: list[str] = []
        seen: set[Any] = set()
        rows = 0
        batches = self._scan_jsonl() if self.kind == "jsonl" else self._scan_arrow()
        for where, ids, texts in batches:
            for k, (id_, text) in enumerate(zip(ids, texts)):
                _check_row(self.path, where(k), self.id_column, id_, self.text_column, text)
                key = str(id_)
                if key in seen:
                    raise ValueError(f"{self.path}: {where(k)}: id {id_!r} appears twice; ids must be unique")
                seen.add(key)
                self.int_ids = self.int_ids and isinstance(id_, int)
                rows += 1
                if len(sample) < calibration_size:  # reservoir sampling: a uniform sample in one pass
                    sample.append(text)
                elif calibration_size and (j := rng.randrange(rows)) < calibration_size:
                    sample[j] = text
        if rows == 0:
            raise ValueError(f"{self.path}: no rows (expected columns {self.id_column!r} and {self.text_column!r})")
        self.num_rows = rows
        return sample

    def shard_bounds(self) -> list[tuple[int, int]]:
        return [(s, min(s + self.shard_size, self.num_rows)) for s in range(0, self.num_rows, self.shard_size)]

    def read_shard(self, index: int) -> tuple[list[Any], list[str]]:
        """(ids, texts) of shard `index` (after `scan`)."""
        start, stop = self.shard_bounds()[index]
        if self.kind == "jsonl":
            offset, _ = self.jsonl_starts[index]
            ids, texts = [], []
            with open(self.path, "rb") as f:
                f.seek(offset)
                while len(ids) < stop - start:
                    line = f.readline()
                    if not line.strip():
                        continue
                    row = json.loads(line)
                    ids.append(row[self.id_column])
                    texts.append(row[self.text_column])
            return ids, texts
        table = self._arrow_rows(start, stop)
        return table.column(self.id_column).to_pylist(), table.column(self.text_column).to_pylist()

    # -------------------------------------------------------------------------------------------- internals
    def _columns_check(self, found: Sequence[str]) -> None:
        for what, name in (("id", self.id_column), ("text", self.text_column)):
            if name not in found:
                raise ValueError(
                    f"{self.path}: no column {name!r} for the {what} (found {sorted(found)}); "
                    f"name it with --{what}-column"
                )

    def _scan_jsonl(self) -> Iterator[tuple[Callable[[int], str], list[Any], list[str]]]:
        self.jsonl_starts = []
        rows = 0
        with open(self.path, "rb") as f:
            offset, number = 0, 0
            for line in f:
                number += 1
                start, offset = offset, offset + len(line)
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{self.path}: line {number}: not JSON ({err.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{self.path}: line {number}: expected a JSON object, got {type(row).__name__}")
                if rows == 0:
                    self._columns_check(list(row))
                if rows % self.shard_size == 0:
                    self.jsonl_starts.append((start, number))
                rows += 1
                missing = [c for c in (self.id_column, self.text_column) if c not in row]
                if missing:
                    raise ValueError(f"{self.path}: line {number}: no column {missing[0]!r} (found {sorted(row)})")
                yield (lambda _k, n=number: f"line {n}"), [row[self.id_column]], [row[self.text_column]]

    def _scan_arrow(self) -> Iterator[tuple[Callable[[int], str], list[Any], list[str]]]:
        self._columns_check(self._schema_names())
        first = 0
        for table in self._arrow_batches():
            ids, texts = table.column(self.id_column).to_pylist(), table.column(self.text_column).to_pylist()
            yield (lambda k, f=first: f"row {f + k + 1}"), ids, texts
            first += len(ids)

    def _files(self) -> list[Path]:
        path = Path(self.path)
        return sorted(path.glob("*.parquet")) if path.is_dir() else [path]

    def _hf(self) -> Any:
        if self._dataset is None:
            from datasets import Dataset, load_from_disk

            dataset = load_from_disk(self.path)
            if not isinstance(dataset, Dataset):
                raise ValueError(
                    f"{self.path} is a DatasetDict with splits {sorted(dataset)}; give one split's folder, "
                    f"e.g. {Path(self.path) / sorted(dataset)[0]}"
                )
            self._dataset = dataset.select_columns([self.id_column, self.text_column]).with_format("arrow")
        return self._dataset

    def _schema_names(self) -> list[str]:
        if self.kind == "hf":
            from datasets import load_from_disk

            dataset = load_from_disk(self.path)
            if not hasattr(dataset, "column_names") or isinstance(dataset.column_names, dict):
                self._hf()  # raises the DatasetDict error
            return list(dataset.column_names)
        import pyarrow.parquet as pq

        names = [pq.read_schema(f).names for f in self._files()]
        return [n for n in names[0] if all(n in other for other in names)]

    def _arrow_batches(self) -> Iterator[Any]:
        import pyarrow as pa

        columns = [self.id_column, self.text_column]
        if self.kind == "hf":
            dataset = self._hf()
            for start in range(0, len(dataset), _SCAN_BATCH):
                yield dataset[start : start + _SCAN_BATCH]
            return
        import pyarrow.parquet as pq

        for file in self._files():
            for batch in pq.ParquetFile(file).iter_batches(batch_size=_SCAN_BATCH, columns=columns):
                yield pa.Table.from_batches([batch])

    def _arrow_rows(self, start: int, stop: int) -> Any:
        """Rows [start, stop) as an arrow table, reading only the parquet row groups that hold them."""
        import pyarrow as pa

        if self.kind == "hf":
            return self._hf()[start:stop]
        import pyarrow.parquet as pq

        pieces, first = [], 0
        for file in self._files():
            handle = pq.ParquetFile(file)
            for group in range(handle.num_row_groups):
                n = handle.metadata.row_group(group).num_rows
                if first < stop and first + n > start:
                    table = handle.read_row_group(group, columns=[self.id_column, self.text_column])
                    pieces.append(table.slice(max(start - first, 0), min(stop, first + n) - max(start, first)))
                first += n
        return pa.concat_tables(pieces)


def _detect_kind(path: Path) -> str:
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return "hf"
        if any(path.glob("*.parquet")):
            return "parquet"
        raise ValueError(f"{path}: a folder with neither parquet files nor a saved Hugging Face dataset")
    if not path.is_file():
        raise ValueError(f"{path}: no such file or folder")
    if path.suffix in (".jsonl", ".json"):
        return "jsonl"
    if path.suffix == ".parquet":
        return "parquet"
    raise ValueError(f"{path}: unknown input format; allowed: .jsonl, .parquet, a folder of parquet files, "
                     "or a Hugging Face dataset saved with save_to_disk")  # fmt: skip


def _check_row(path: str, where: str, id_column: str, id_: Any, text_column: str, text: Any) -> None:
    if id_ is None or (isinstance(id_, str) and not id_.strip()):
        raise ValueError(f"{path}: {where}: column {id_column!r} is empty")
    if not isinstance(id_, (str, int)) or isinstance(id_, bool):
        raise ValueError(f"{path}: {where}: column {id_column!r} must be a string or an integer, got {id_!r}")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{path}: {where}: column {text_column!r} is empty or not a string: {text!r}")


# -------------------------------------------------------------------------------------------------- precision
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


def prefix(vectors: np.ndarray, dim: int) -> np.ndarray:
    """The MRL cut: first `dim` values, L2-normalised (as `truncate_embeddings`)."""
    cut = vectors[:, :dim].astype(np.float32)
    return cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------------------------------------- encoding
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
        """(N, D) full-width float32 embeddings, L2-normalised; texts sorted by length so batches pad little."""
        job = self.job
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.width), dtype=np.float32)
        chunk = job.batch_size * 16  # progress granularity; `encode` keeps the sorted order inside
        for start in range(0, len(texts), chunk):
            idx = order[start : start + chunk]
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

    def write_shard(self, index: int, progress: Any = None) -> int:
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
    _write_manifest(out, manifest)
    return manifest


class _RayShardWorker:
    """A Ray Data actor: one model per actor, one shard per call."""

    def __init__(self, job: EncodeJob, threads: int) -> None:
        self.encoder = ShardEncoder(job, threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [self.encoder.write_shard(int(i)) for i in batch["shard"]]
        return {"shard": np.asarray(batch["shard"]), "rows": np.asarray(rows, dtype=np.int64)}


def _probe_and_calibrate(job: EncodeJob, sample: list[str], threads: int | None = None) -> tuple[dict, list, Any]:
    """The resolved setting, the probe embedding and (int8, new run) the calibration ranges."""
    return _probe_and_calibrate_with(ShardEncoder(job, threads=threads), sample)


def _probe_and_calibrate_with(encoder: ShardEncoder, sample: list[str]) -> tuple[dict, list, Any]:
    job = encoder.job
    ranges = job.ranges
    if job.precision == "int8" and ranges is None:
        ranges = calibration_ranges(encoder.embed(sample, job.prompt_name)).tolist()
    return encoder.setting(), encoder.fingerprint(), ranges


# ---------------------------------------------------------------------------------------------------- manifest
def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ValueError(f"{out_dir}: no {MANIFEST_NAME}; encode a corpus there first (mlembed encode-corpus)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def _write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    tmp = out_dir / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out_dir / MANIFEST_NAME)


def check_fingerprint(manifest: dict[str, Any], probe: Sequence[float], what: str) -> None:
    """Refuse a model / setting whose probe embedding differs from the one recorded in the manifest."""
    stored = np.asarray(manifest["fingerprint"], dtype=np.float32)
    probe = np.asarray(probe, dtype=np.float32)
    cosine = float(stored @ probe / max(np.linalg.norm(stored) * np.linalg.norm(probe), 1e-12))
    if stored.shape != probe.shape or cosine < PROBE_MIN_COSINE:
        setting = manifest["setting"]
        raise ValueError(
            f"{what} does not match the corpus manifest (model {manifest['model']!r}, layers={setting['layers']}, "
            f"rank={setting['rank']}, prompt {setting['prompt_name']!r}): its embedding of the probe text has "
            f"cosine {cosine:.3f} to the recorded one (needs >= {PROBE_MIN_COSINE})"
        )


_IDENTITY_KEYS = ("setting", "precision", "input", "shard_size")  # the model: by its fingerprint, not its path


def _check_same_run(old: dict[str, Any], new: dict[str, Any], out_dir: Path) -> None:
    for key in _IDENTITY_KEYS:
        if old.get(key) != new.get(key):
            raise ValueError(
                f"{out_dir} holds a corpus encoded with {key}={json.dumps(old.get(key))}, this run asks for "
                f"{key}={json.dumps(new.get(key))}; resume with the same settings, or write to a new folder"
            )


# -------------------------------------------------------------------------------------------------------- run
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
    ray, started_ray = _ray_start(address, num_workers * num_cpus_per_worker) if engine == "ray" else (None, False)
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
            _write_manifest(out, manifest)

        with tqdm(total=source.num_rows, initial=sum(done.values()), unit="doc", desc="encode-corpus") as bar:
            if encoder is not None:
                for i in pending:
                    finished(i, encoder.write_shard(i, progress=bar))
            else:
                _run_ray(job, pending, num_workers, num_cpus_per_worker, num_gpus_per_worker, bar, finished)
    finally:
        if started_ray:  # a Ray instance this call started ends with it (no processes left behind)
            ray.shutdown()
    manifest["complete"] = True
    _write_manifest(out, manifest)
    return manifest


def _open_run(
    job: EncodeJob, sample: list[str], old: dict | None, ray: Any, num_cpus: float, num_gpus: float
) -> tuple[ShardEncoder | None, dict[str, Any]]:
    """The fingerprint, resolved setting and int8 ranges (in a Ray task for the Ray engine: the driver never loads
    the model, it may have no GPU); then a new manifest, or the old one after checking this run matches it."""
    if ray is not None:
        resources = {"num_cpus": num_cpus, **({"num_gpus": num_gpus} if num_gpus else {})}
        task = ray.remote(**resources)(_probe_and_calibrate)
        encoder, (setting, probe, ranges) = None, ray.get(task.remote(job, sample, max(1, int(num_cpus))))
        job.layers, job.rank, job.max_length = setting["layers"], setting["rank"], setting["max_length"]
    else:
        encoder = ShardEncoder(job)
        setting, probe, ranges = _probe_and_calibrate_with(encoder, sample)
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
        _check_same_run(old, header, out)
        check_fingerprint(old, probe, f"model {job.model!r}")
        return encoder, old
    job.ranges = ranges
    out.mkdir(parents=True, exist_ok=True)
    manifest = {**header, "dim": len(probe), "fingerprint": probe, "int8_ranges": ranges, "shards": []}
    manifest["complete"] = False
    _write_manifest(out, manifest)
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


def _ray_start(address: str | None, cpus: float) -> tuple[Any, bool]:
    """The running Ray instance, the cluster at `address`, or a new local one sized for the actor pool; and
    whether this call started it."""
    import ray

    if ray.is_initialized():
        return ray, False
    if address:
        ray.init(address=address, include_dashboard=False)
    else:
        ray.init(num_cpus=max(1, int(np.ceil(cpus))), include_dashboard=False, log_to_driver=False)
    return ray, True


def _run_ray(
    job: EncodeJob,
    pending: list[int],
    num_workers: int,
    num_cpus: float,
    num_gpus: float,
    progress: Any,
    finished: Callable[[int, int], None],
) -> None:
    import ray.data

    if not pending:
        return
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # our own bar counts documents
    shards = ray.data.from_items([{"shard": i} for i in pending], override_num_blocks=len(pending))
    results = shards.map_batches(
        _RayShardWorker,
        fn_constructor_kwargs={"job": job, "threads": max(1, int(num_cpus))},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=min(num_workers, len(pending))),
        num_cpus=num_cpus,
        **({"num_gpus": num_gpus} if num_gpus else {}),
    )
    for row in results.iter_rows():
        finished(int(row["shard"]), int(row["rows"]))
        progress.update(int(row["rows"]))


# ------------------------------------------------------------------------------------------------------ reading
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
            yield batch.column("id").to_pylist(), prefix(vectors, dim)


def job_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the CLI prints after a run."""
    return {
        "rows": sum(s["rows"] for s in manifest["shards"]),
        "shards": len(manifest["shards"]),
        "dim": manifest["dim"],
        "precision": manifest["precision"],
        "setting": manifest["setting"],
    }


__all__ = [
    "PRECISIONS",
    "CorpusInput",
    "EncodeJob",
    "ShardEncoder",
    "calibration_ranges",
    "check_fingerprint",
    "dequantize",
    "encode_corpus",
    "prefix",
    "quantize",
    "read_corpus",
    "read_manifest",
    "write_shard",
    "write_vectors",
]
