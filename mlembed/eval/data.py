"""Local retrieval data for the elastic-profile sweep: one relevant (query, passage) pair per row.

File format: `.jsonl` (one JSON object per line) or `.parquet`, with string columns `query` and `passage` (the
names of the training format; `document`, the name of older files, is read too) and an optional `language`. The
corpus is every distinct passage; the relevant passages of a query are the passages paired with it. Everything is
validated before any encoding, so a bad row fails in seconds, not after an hour of embedding; errors name the file,
the row (1-based: the line of a jsonl file, the record of a parquet file) and the column.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("query", "passage")
_OLD_NAMES = {"document": "passage"}  # eval files written before the training and eval vocabularies were one
OPTIONAL_COLUMNS = ("language",)


@dataclass
class RetrievalData:
    """Queries, corpus and relevance, with ids as list positions.

    Attributes:
        queries: distinct query texts, in order of first appearance.
        corpus: distinct passage texts, in order of first appearance.
        relevant: per query, the set of indices into `corpus` paired with it.
        languages: per query, its language (the `language` of its first row), or `None` without that column.
        source: the file the data came from (for messages).
    """

    queries: list[str]
    corpus: list[str]
    relevant: list[set[int]]
    languages: list[str] | None = None
    source: str = "<memory>"


def load_retrieval_data(path: str | Path) -> RetrievalData:
    """Read and validate a `.jsonl` or `.parquet` file of relevant (query, passage) pairs."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    numbered = _read_jsonl(path) if path.suffix == ".jsonl" else _read_parquet(path)
    if not numbered:
        raise ValueError(f"{path}: the file is empty (expected rows with columns {list(REQUIRED_COLUMNS)})")
    rows = [row for _, row in numbered]
    columns = set().union(*(row.keys() for row in rows))
    for old, new in _OLD_NAMES.items():
        if old in columns and new not in columns:
            logger.warning("%s: reading column %r as %r (the name the training data uses too)", path, old, new)
            for row in rows:
                row[new] = row.pop(old, None)
            columns = (columns - {old}) | {new}
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {sorted(columns)}")
    has_language = "language" in columns
    for number, row in numbered:
        for column in REQUIRED_COLUMNS + (OPTIONAL_COLUMNS if has_language else ()):
            _check_text(path, number, column, row.get(column))
    return pairs_to_data(
        [row["query"] for row in rows],
        [row["passage"] for row in rows],
        [row["language"] for row in rows] if has_language else None,
        source=str(path),
    )


def pairs_to_data(
    queries: Sequence[str], passages: Sequence[str], languages: Sequence[str] | None = None, source: str = "<memory>"
) -> RetrievalData:
    """Group relevant pairs into distinct queries, a distinct-passage corpus and relevance sets."""
    query_index: dict[str, int] = {}
    doc_index: dict[str, int] = {}
    relevant: list[set[int]] = []
    query_languages: list[str] = []
    for i, (query, passage) in enumerate(zip(queries, passages, strict=True)):
        doc_id = doc_index.setdefault(passage, len(doc_index))
        if query not in query_index:
            query_index[query] = len(query_index)
            relevant.append(set())
            query_languages.append(languages[i] if languages is not None else "")
        relevant[query_index[query]].add(doc_id)
    logger.info("%s: %d queries, %d passages, %d pairs", source, len(query_index), len(doc_index), len(queries))
    return RetrievalData(
        queries=list(query_index),
        corpus=list(doc_index),
        relevant=relevant,
        languages=query_languages if languages is not None else None,
        source=source,
    )


def _check_text(path: Path, row: int, column: str, value: Any) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{path}: row {row}, column {column!r}: expected a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{path}: row {row}, column {column!r}: empty text")


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) per non-blank line, so messages point at the line to fix."""
    rows: list[tuple[int, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: row {number}: invalid JSON ({error.msg})") from error
            if not isinstance(row, dict):
                raise ValueError(f"{path}: row {number}: expected a JSON object, got {type(row).__name__}")
            rows.append((number, row))
    return rows


def _read_parquet(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(record number, record) per row of a parquet file."""
    import pandas as pd

    if path.suffix != ".parquet":
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl or .parquet")
    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for a corrupt file
        raise ValueError(f"{path}: cannot read as parquet ({error})") from error
    # object dtype keeps None for nulls (NaN would disguise a missing text as a float)
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return list(enumerate(records, start=1))
