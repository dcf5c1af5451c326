"""The corpus to encode: a JSONL file, a parquet file or folder, or a Hugging Face dataset saved to disk, read and
validated once, then shard by shard (every row is checked before any encoding, so a bad row fails in seconds)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SCAN_BATCH = 65_536


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
