"""The ML-Embed training-data format: one parquet file per dataset, validated and turned into a corpus.

Each file holds one dataset (its name is the file's stem) with the string columns `query`, `passage` and
`negative_1 .. negative_N` (N may differ between files; a null negative cell means "not available"). The dataset's
type decides how many hard negatives each query gets and whether the in-batch loss applies:

* `retrieval` (default): 7 negatives, in-batch loss on;
* `clustering`: 9 negatives; `classification`: 1 negative (hard-negative loss only).

Types are given per dataset (`dataset_types={"name": "clustering"}`); otherwise the name decides, as in the
reference: a name containing "clustering" is clustering, one containing "classification" is classification, any
other is retrieval. The negatives of a row are sampled once, at load, from its available ones with a generator
seeded by (seed, dataset name), so every process sees the same rows without communicating.

Everything is validated up front; errors name the file, the (0-based) row and the column. An invalid row is an
error unless `on_invalid="skip"`, which drops it and logs how many were dropped.
"""

from __future__ import annotations

import logging
import zlib
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from configuration_mlembed import DEFAULT_INSTRUCTION, QUERY_TEMPLATE

logger = logging.getLogger(__name__)

DATASET_TYPES = ("retrieval", "clustering", "classification")
DEFAULT_NUM_NEGATIVES = {"retrieval": 7, "clustering": 9, "classification": 1}
DEFAULT_MAX_ROWS = 80_000
ON_INVALID = ("error", "skip")
# Accepted column names for a `datasets.Dataset` (sentence-transformers style first).
_QUERY_COLUMNS = ("anchor", "query")
_PASSAGE_COLUMNS = ("positive", "passage")


def infer_dataset_type(name: str) -> str:
    """Type from a dataset's name, as the reference does: "clustering" / "classification" in it, else retrieval."""
    lowered = name.lower()
    if "clustering" in lowered:
        return "clustering"
    if "classification" in lowered:
        return "classification"
    return "retrieval"


@dataclass
class EmbeddingDataset:
    """One validated dataset: rows with columns `query`, `passage` and `negatives` (list of N strings)."""

    name: str
    type: str
    instruction: str | None
    num_negatives: int
    rows: Any  # datasets.Dataset
    source: str

    @property
    def prompt(self) -> str:
        """Prefix of every query; empty when the dataset has no instruction."""
        return QUERY_TEMPLATE.format(instruction=self.instruction) if self.instruction else ""

    @property
    def in_batch(self) -> bool:
        """The in-batch loss is applied on retrieval datasets only."""
        return self.type == "retrieval"

    def __len__(self) -> int:
        return len(self.rows)


class TrainingCorpus(torch.utils.data.Dataset):
    """The concatenation of datasets, indexable by a global index (the order of `datasets`).

    Items are dicts `{query, passage, negatives, dataset, type, prompt}`; `dataset_lengths` feeds
    `OneDatasetBatchSampler`, whose batches never straddle two datasets.
    """

    def __init__(self, datasets: Sequence[EmbeddingDataset]) -> None:
        names = [d.name for d in datasets]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"dataset names must be unique, got duplicates {duplicates}")
        self.datasets = list(datasets)
        self.offsets = np.cumsum([0] + self.dataset_lengths).tolist()

    @property
    def dataset_lengths(self) -> list[int]:
        return [len(d) for d in self.datasets]

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """Global index -> (dataset position, row within that dataset)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a corpus of {len(self)} rows")
        index %= len(self)
        position = bisect_right(self.offsets, index) - 1
        return position, index - self.offsets[position]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Batched fetch (used by the DataLoader): one arrow read per dataset instead of one per row."""
        located = [self.locate(int(i)) for i in indices]
        out: list[dict[str, Any] | None] = [None] * len(located)
        for position in sorted({p for p, _ in located}):
            ds = self.datasets[position]
            slots = [k for k, (p, _) in enumerate(located) if p == position]
            columns = ds.rows[[located[k][1] for k in slots]]
            for j, k in enumerate(slots):
                out[k] = {
                    "query": columns["query"][j],
                    "passage": columns["passage"][j],
                    "negatives": columns["negatives"][j],
                    "dataset": ds.name,
                    "type": ds.type,
                    "prompt": ds.prompt,
                }
        return out


def load_parquet_corpus(
    paths: str | Path | Iterable[str | Path],
    dataset_types: Mapping[str, str] | None = None,
    instructions: Mapping[str, str | None] | None = None,
    num_negatives: Mapping[str, int] | None = None,
    max_rows: int | None = DEFAULT_MAX_ROWS,
    seed: int = 0,
    on_invalid: str = "error",
) -> TrainingCorpus:
    """Read a folder (every `*.parquet` in it, sorted) or a list of parquet files into a `TrainingCorpus`.

    Args:
        paths: a folder, one file, or a list of files; a dataset's name is its file's stem.
        dataset_types: name -> type (one of `DATASET_TYPES`); names not listed get `infer_dataset_type(name)`.
        instructions: name -> query instruction ("" = no prompt). Unlisted (or `None`) retrieval datasets get
            `DEFAULT_INSTRUCTION`; unlisted clustering / classification datasets get no prompt (with a warning).
        num_negatives: type -> negatives per query, overriding `DEFAULT_NUM_NEGATIVES`.
        max_rows: keep the first `max_rows` valid rows of each file (`None` = all).
        seed: seed of the per-row negative sampling.
        on_invalid: "error" (default) or "skip" (drop invalid rows and log the count).
    """
    files = _parquet_files(paths)
    names = [f.stem for f in files]
    _check_names("dataset_types", dataset_types, names)
    _check_names("instructions", instructions, names)
    datasets = [
        build_dataset(
            pq.read_table(f),
            name=f.stem,
            source=str(f),
            dataset_type=(dataset_types or {}).get(f.stem),
            instruction=(instructions or {}).get(f.stem),
            num_negatives=num_negatives,
            max_rows=max_rows,
            seed=seed,
            on_invalid=on_invalid,
        )
        for f in files
    ]
    return TrainingCorpus(datasets)


def from_hf_dataset(
    dataset: Any,
    name: str = "train",
    dataset_type: str | None = None,
    instruction: str | None = None,
    num_negatives: int | None = None,
    max_rows: int | None = None,
    seed: int = 0,
    on_invalid: str = "error",
) -> EmbeddingDataset:
    """One validated dataset from a `datasets.Dataset` with (anchor, positive, negative | negative_1..N) columns.

    `query` / `passage` are accepted in place of `anchor` / `positive`. `dataset_type=None` infers the type from
    `name` as for parquet files (`infer_dataset_type`). `num_negatives=None` uses as many negative columns as there
    are, up to the type's default (so an (anchor, positive) dataset trains with the in-batch loss only).
    `instruction=None` gives the type's default (see `build_dataset`); "" gives no prompt.
    """
    dataset_type = dataset_type or infer_dataset_type(name)
    table = _standard_columns(dataset.with_format("arrow")[:], name)
    available = len(_negative_columns(table.column_names))
    if num_negatives is None:
        num_negatives = min(DEFAULT_NUM_NEGATIVES.get(dataset_type, 0), available)
    return build_dataset(
        table,
        name=name,
        source=f"<datasets.Dataset {name}>",
        dataset_type=dataset_type,
        instruction=instruction,
        num_negatives={dataset_type: num_negatives},
        max_rows=max_rows,
        seed=seed,
        on_invalid=on_invalid,
    )


def as_training_corpus(data: Any, seed: int = 0) -> TrainingCorpus:
    """What the Trainer accepts as `train_dataset`, as a `TrainingCorpus`.

    A `TrainingCorpus` is returned as is; a `datasets.Dataset` becomes one dataset named "train"; a `DatasetDict`
    (or any mapping of names to `datasets.Dataset`) becomes one dataset per key, each step drawing from one of them.
    """
    if isinstance(data, TrainingCorpus):
        return data
    import datasets

    if isinstance(data, datasets.Dataset):
        return TrainingCorpus([from_hf_dataset(data, seed=seed)])
    if isinstance(data, Mapping) and data and all(isinstance(v, datasets.Dataset) for v in data.values()):
        return TrainingCorpus([from_hf_dataset(ds, name=str(name), seed=seed) for name, ds in data.items()])
    raise TypeError(
        "train_dataset must be a datasets.Dataset, a DatasetDict of them, or a TrainingCorpus "
        f"(mlembed.data.load_parquet_corpus), got {type(data).__name__}"
    )


def build_dataset(
    table: pa.Table,
    name: str,
    source: str,
    dataset_type: str | None = None,
    instruction: str | None = None,
    num_negatives: Mapping[str, int] | None = None,
    max_rows: int | None = DEFAULT_MAX_ROWS,
    seed: int = 0,
    on_invalid: str = "error",
) -> EmbeddingDataset:
    """Validate one table in the published format, sample its negatives and wrap it as an `EmbeddingDataset`.

    `instruction=None` means the type's default: `DEFAULT_INSTRUCTION` for retrieval, no prompt (with a warning)
    for clustering / classification, whose instructions are task-specific; "" means no prompt.
    """
    import datasets
    from datasets.table import InMemoryTable

    if on_invalid not in ON_INVALID:
        raise ValueError(f"on_invalid must be one of {ON_INVALID}, got {on_invalid!r}")
    dataset_type = dataset_type or infer_dataset_type(name)
    if dataset_type not in DATASET_TYPES:
        raise ValueError(f"{source}: dataset type must be one of {DATASET_TYPES}, got {dataset_type!r}")
    k = _negatives_for(dataset_type, num_negatives, source)
    table = _check_schema(table, source, k)
    negative_columns = _negative_columns(table.column_names)
    valid, negatives_ok = _valid_rows(table, negative_columns, k, source, dataset_type, on_invalid)
    keep = np.flatnonzero(valid)[: max_rows if max_rows is not None else None]
    table = table.take(pa.array(keep, pa.int64()))
    negatives = _sample_negatives(table, negative_columns, negatives_ok[keep], k, _row_seed(seed, name))
    rows = pa.table({"query": table["query"], "passage": table["passage"], "negatives": negatives})
    if instruction is None:
        instruction = DEFAULT_INSTRUCTION if dataset_type == "retrieval" else ""
        if not instruction:
            logger.warning(
                "%s: no instruction given for %s dataset %r; its queries get no prompt", source, dataset_type, name
            )
    logger.info("%s: %d rows, type %s, %d negatives per query", source, len(keep), dataset_type, k)
    # an explicit fingerprint skips datasets' hashing of the whole table
    fingerprint = f"{zlib.crc32(repr((source, name, seed, k, max_rows, on_invalid)).encode()):08x}"
    rows = datasets.Dataset(InMemoryTable(rows), fingerprint=fingerprint)
    return EmbeddingDataset(name, dataset_type, instruction or None, k, rows, source)


def _parquet_files(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(paths, (str, Path)):
        path = Path(paths)
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    else:
        files = [Path(p) for p in paths]
    if not files:
        raise ValueError(f"no parquet files found in {paths}")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"parquet files not found: {missing}")
    return files


def _check_names(option: str, mapping: Mapping[str, Any] | None, names: list[str]) -> None:
    """Catch typos: every key of a per-dataset option must name a loaded dataset."""
    unknown = sorted(set(mapping or {}) - set(names))
    if unknown:
        raise ValueError(f"{option} names unknown datasets {unknown}; the datasets are {sorted(names)}")


def _negatives_for(dataset_type: str, num_negatives: Mapping[str, int] | None, source: str) -> int:
    counts = {**DEFAULT_NUM_NEGATIVES, **(num_negatives or {})}
    unknown = sorted(set(counts) - set(DATASET_TYPES))
    if unknown:
        raise ValueError(f"num_negatives keys must be dataset types {DATASET_TYPES}, got {unknown}")
    k = counts[dataset_type]
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ValueError(f"num_negatives[{dataset_type!r}] must be a non-negative integer, got {k!r}")
    if k == 0 and dataset_type != "retrieval":
        raise ValueError(
            f"{source}: a {dataset_type} dataset needs at least 1 negative per query (it has no in-batch loss)"
        )
    return k


def _negative_columns(columns: Sequence[str]) -> list[str]:
    """`negative_1 .. negative_N` in numeric order (negative_10 after negative_9)."""
    found = [c for c in columns if c.startswith("negative_") and c[len("negative_") :].isdigit()]
    return sorted(found, key=lambda c: int(c[len("negative_") :]))


def _check_schema(table: pa.Table, source: str, k: int) -> pa.Table:
    """Required columns present, text columns of string type (a schema fault is always an error)."""
    missing = [c for c in ("query", "passage") if c not in table.column_names]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {missing}; the format needs query, passage, negative_1..N "
            f"(found {table.column_names})"
        )
    negatives = _negative_columns(table.column_names)
    if len(negatives) < k:
        raise ValueError(
            f"{source}: column negative_{len(negatives) + 1} missing: this dataset needs {k} negatives "
            f"per query but has {len(negatives)} negative column(s)"
        )
    for column in ["query", "passage", *negatives]:
        kind = table.schema.field(column).type
        if pa.types.is_null(kind) and column in negatives:
            table = table.set_column(table.column_names.index(column), column, table[column].cast(pa.string()))
        elif not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise ValueError(f"{source}: row 0, column {column!r}: texts must be strings, the column has type {kind}")
    return table


def _valid_rows(
    table: pa.Table, negative_columns: list[str], k: int, source: str, dataset_type: str, on_invalid: str
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean mask of valid rows and (rows, N) mask of usable negatives; raises or logs on invalid rows."""
    problems: list[tuple[np.ndarray, str, str]] = []
    for column in ("query", "passage"):
        problems.append((_blank(table[column], null_is_blank=True), column, "empty or missing text"))
    usable = np.zeros((table.num_rows, len(negative_columns)), dtype=bool)
    for j, column in enumerate(negative_columns):
        problems.append((_blank(table[column], null_is_blank=False), column, "empty text (use null for no negative)"))
        usable[:, j] = ~np.asarray(pc.is_null(table[column]).to_numpy(zero_copy_only=False)) & ~problems[-1][0]
    too_few = usable.sum(1) < k
    label = f"{negative_columns[0]}..{negative_columns[-1]}" if negative_columns else "negative_1"
    problems.append((too_few, label, f"fewer than {k} negatives, which a {dataset_type} dataset needs"))
    invalid = np.logical_or.reduce([mask for mask, _, _ in problems]) if table.num_rows else np.zeros(0, bool)
    count = int(invalid.sum())
    if count:
        row = int(np.argmax(invalid))
        column, reason = next((c, r) for mask, c, r in problems if mask[row])
        where = f"{source}: row {row}, column {column!r}: {reason}"
        if on_invalid == "error":
            more = f" ({count - 1} more invalid row(s))" if count > 1 else ""
            raise ValueError(f"{where}{more}; fix the data or pass on_invalid='skip' to drop invalid rows")
        logger.warning("%s: skipped %d of %d invalid rows (first: %s)", source, count, table.num_rows, where)
    return ~invalid, usable


def _blank(column: pa.ChunkedArray, null_is_blank: bool) -> np.ndarray:
    """Rows whose text is empty or whitespace only (and, if asked, null)."""
    empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(column)), 0)
    empty = pc.fill_null(empty, null_is_blank)
    return np.asarray(empty.to_numpy(zero_copy_only=False), dtype=bool)


def _row_seed(seed: int, name: str) -> np.random.Generator:
    """Generator that depends only on (seed, dataset name): identical on every process and every run."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def _sample_negatives(
    table: pa.Table, negative_columns: list[str], usable: np.ndarray, k: int, rng: np.random.Generator
) -> pa.Array:
    """Per row, k distinct negatives drawn uniformly from its usable ones, as a fixed-size list column."""
    n = table.num_rows
    if k == 0 or n == 0:
        return pa.array([[] for _ in range(n)], pa.list_(pa.string()))
    keys = rng.random(usable.shape)  # (n, N): random order, unusable negatives sorted last
    keys[~usable] = np.inf
    chosen = np.argsort(keys, axis=1, kind="stable")[:, :k]  # (n, k) column indices
    values = pa.concat_arrays([table[c].combine_chunks().cast(pa.string()) for c in negative_columns])
    flat = (chosen * n + np.arange(n)[:, None]).reshape(-1)  # index into the column-major concatenation
    picked = values.take(pa.array(flat, pa.int64()))
    return pa.ListArray.from_arrays(pa.array(np.arange(0, n * k + 1, k), pa.int32()), picked)


def _standard_columns(table: pa.Table, name: str) -> pa.Table:
    """Rename sentence-transformers columns (anchor, positive, negative) to the parquet format's names."""
    renames: dict[str, str] = {}
    for target, options in (("query", _QUERY_COLUMNS), ("passage", _PASSAGE_COLUMNS)):
        present = [c for c in options if c in table.column_names]
        if len(present) != 1:
            raise ValueError(
                f"dataset {name!r}: needs exactly one of the columns {list(options)}, found {table.column_names}"
            )
        renames[present[0]] = target
    if "negative" in table.column_names:
        if _negative_columns(table.column_names):
            raise ValueError(f"dataset {name!r}: give either a 'negative' column or negative_1..N, not both")
        renames["negative"] = "negative_1"
    return table.rename_columns([renames.get(c, c) for c in table.column_names])
