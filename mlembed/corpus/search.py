"""Elastic retrieval in Qdrant: a short MRL prefix finds a shortlist, the full vector rescores it.

One collection, two named vectors per document:

* `short`: the first `dim` values of the embedding, L2-normalised, then quantised (`binary` by default: +-1 per
  dimension, i.e. `dim / 8` bytes; or `int8`, `float32`);
* `full`: the full-width vector as the corpus stored it (float32, float16, int8 or binary, dequantised).

A query runs as one Qdrant request: `query_points(prefetch=Prefetch(query=q[:dim], using="short",
limit=shortlist), query=q, using="full")` takes the `shortlist` best documents by the short vector and returns the
top `k` of them by the full vector. `mode="single"` stores one vector (`dense`, any `dim` and precision) for
comparison.

Why the quantised values are stored as floats: Qdrant's embedded local mode (`QdrantClient(path=...)`, the default
here) is an exact numpy search that ignores quantisation configs, so the short vector carries its own quantisation
(binary: the sign of each dimension, scaled to unit length) and scores the same in both modes. Against a server
(`--db http://...`) the same code also asks Qdrant to keep the short vector binary- or int8-quantised in RAM and the
full vectors on disk (`collection_config`), the layout whose bytes `index_bytes` reports. The query is the float
prefix (asymmetric scoring: float query against quantised documents).

The collection's metadata records the corpus manifest's model, setting and fingerprint: `search` encodes the query
with the query prompt at that setting, and refuses a model or setting that does not match.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlembed.corpus.manifest import check_fingerprint, read_manifest
from mlembed.corpus.precision import PRECISIONS, calibration_ranges, dequantize, quantize, truncate_vectors
from mlembed.corpus.run import read_corpus

logger = logging.getLogger(__name__)

MODES = ("funnel", "single")
SHORT_PRECISIONS = ("binary", "int8", "float32")
DEFAULT_COLLECTION = "corpus"
_BYTES = {"float32": 4.0, "float16": 2.0, "int8": 1.0, "binary": 0.125}


def open_db(db: str) -> Any:
    """`http(s)://...`: a Qdrant server; `:memory:`: embedded, in memory; anything else: an embedded folder."""
    from qdrant_client import QdrantClient

    if db.startswith(("http://", "https://")):
        return QdrantClient(url=db)
    if db == ":memory:":
        return QdrantClient(location=":memory:")
    return QdrantClient(path=db)


def is_server(client: Any) -> bool:
    from qdrant_client.local.qdrant_local import QdrantLocal

    return not isinstance(getattr(client, "_client", None), QdrantLocal)


def store_vectors(vectors: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """Unit vectors as a precision represents them, back in float32 and re-normalised (what the index scores).

    binary: sign per dimension; int8: the middle of each `quantize_embeddings` bucket under `ranges`.
    """
    if precision == "float32":
        return vectors.astype(np.float32)
    if precision == "binary":
        signs = np.where(vectors > 0, 1.0, -1.0).astype(np.float32)  # quantize_embeddings' binary: bit = (x > 0)
        return signs / np.sqrt(vectors.shape[1], dtype=np.float32)
    if precision == "int8":
        return truncate_vectors(
            dequantize(quantize(vectors, "int8", ranges), "int8", vectors.shape[1], ranges), vectors.shape[1]
        )
    raise ValueError(f"precision must be one of {list(SHORT_PRECISIONS)}, got {precision!r}")


def index_bytes(dim: int, precision: str) -> float:
    """Bytes per document of one vector at `dim` dims in `precision` (what a server holds for it)."""
    return dim * _BYTES[precision]


def collection_config(mode: str, width: int, dim: int, precision: str, full_precision: str, server: bool) -> dict:
    """`vectors_config` for `create_collection`: cosine everywhere; on a server, quantised RAM copies."""
    from qdrant_client import models

    def quantization(p: str) -> Any:
        if not server or p == "float32":
            return None
        if p == "binary":  # lossless here: the stored values are already +-1 / sqrt(dim)
            return models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))
        return models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(type="int8", always_ram=True))

    cosine = models.Distance.COSINE
    if mode == "single":
        return {"dense": models.VectorParams(size=dim, distance=cosine, quantization_config=quantization(precision))}
    return {
        "short": models.VectorParams(size=dim, distance=cosine, quantization_config=quantization(precision)),
        # the rescoring vectors are read for `shortlist` candidates per query only: disk is enough on a server
        "full": models.VectorParams(
            size=width,
            distance=cosine,
            on_disk=True if server else None,
            datatype=models.Datatype.FLOAT16 if server and full_precision == "float16" else None,
        ),
    }


def build_index(
    corpus_dir: str | Path,
    db: str,
    collection: str = DEFAULT_COLLECTION,
    mode: str = "funnel",
    dim: int | None = None,
    precision: str | None = None,
    recreate: bool = False,
    batch_size: int = 4096,
    client: Any = None,
) -> dict[str, Any]:
    """Load an encoded corpus (`mlembed encode-corpus`) into a Qdrant collection; returns its description.

    `dim` / `precision` describe the shortlist vector (funnel; defaults 128, binary) or the only vector (single;
    defaults: full width, float32). Point ids are row numbers; the corpus ids are in the payload (`id`).
    """
    from tqdm.auto import tqdm

    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    manifest = read_manifest(corpus_dir)
    width = int(manifest["dim"])
    dim = dim if dim is not None else (min(128, width) if mode == "funnel" else width)
    precision = precision or ("binary" if mode == "funnel" else "float32")
    if precision not in SHORT_PRECISIONS:
        raise ValueError(f"precision must be one of {list(SHORT_PRECISIONS)}, got {precision!r}")
    if not 1 <= dim <= width:
        raise ValueError(f"dim must be an integer in 1..{width} (the corpus width), got {dim}")
    ranges = None
    if precision == "int8":  # buckets of the prefix, calibrated on the corpus' first batch (fixed before writing)
        ranges = calibration_ranges(next(read_corpus(corpus_dir, dim, batch_size=10_000))[1])
    client = client or open_db(db)
    if client.collection_exists(collection):
        if not recreate:
            raise ValueError(f"{db} already has a collection {collection!r}; pass --recreate to replace it")
        client.delete_collection(collection)
    info = {
        "mode": mode,
        "dim": dim,
        "precision": precision,
        "width": width,
        "full_precision": manifest["precision"],
        "int8_ranges": None if ranges is None else ranges.tolist(),
        "corpus": {k: manifest[k] for k in ("model", "setting", "fingerprint", "dim", "precision")},
        "corpus_dir": str(corpus_dir),
    }
    server = is_server(client)
    start = time.perf_counter()
    client.create_collection(
        collection,
        vectors_config=collection_config(mode, width, dim, precision, manifest["precision"], server),
        metadata={"mlembed": info},
    )
    total = sum(s["rows"] for s in manifest["shards"])
    row = 0
    with tqdm(total=total, unit="doc", desc="index") as bar:
        for ids, full in read_corpus(corpus_dir, batch_size=batch_size):
            short = store_vectors(truncate_vectors(full, dim), precision, ranges)
            vectors = {"dense": short} if mode == "single" else {"short": short, "full": full}
            client.upload_collection(
                collection,
                vectors=vectors,
                payload=[{"id": i} for i in ids],
                ids=list(range(row, row + len(ids))),
                batch_size=batch_size,
                wait=True,
            )
            row += len(ids)
            bar.update(len(ids))
    info["rows"] = row
    info["build_seconds"] = time.perf_counter() - start
    info["bytes_per_doc"] = _bytes_per_doc(info)
    return info


def _bytes_per_doc(info: dict[str, Any]) -> dict[str, float]:
    first = index_bytes(info["dim"], info["precision"])
    if info["mode"] == "single":
        return {"first_stage": first, "total": first}
    full = index_bytes(info["width"], info["full_precision"])
    return {"first_stage": first, "rescore": full, "total": first + full}


def index_info(client: Any, collection: str = DEFAULT_COLLECTION) -> dict[str, Any]:
    if not client.collection_exists(collection):
        raise ValueError(f"no collection {collection!r}; build it with `mlembed index CORPUS_DIR --db ...`")
    metadata = client.get_collection(collection).config.metadata or {}
    if "mlembed" not in metadata:
        raise ValueError(f"collection {collection!r} was not built by `mlembed index` (no mlembed metadata)")
    return metadata["mlembed"]


def query_vectors(
    client: Any,
    queries: np.ndarray,
    info: dict[str, Any],
    collection: str = DEFAULT_COLLECTION,
    k: int = 10,
    shortlist: int = 100,
) -> list[list[tuple[int, float, Any]]]:
    """Search full-width unit query vectors (N, D); per query the top `k` as (row, score, corpus id)."""
    from qdrant_client import models

    if k < 1 or shortlist < k:
        raise ValueError(f"need 1 <= k <= shortlist, got k={k}, shortlist={shortlist}")
    short = truncate_vectors(queries, info["dim"])
    requests = []
    for q_short, q_full in zip(short, queries):
        if info["mode"] == "single":
            requests.append(models.QueryRequest(query=q_short.tolist(), using="dense", limit=k, with_payload=True))
        else:
            first = models.Prefetch(query=q_short.tolist(), using="short", limit=shortlist)
            requests.append(
                models.QueryRequest(prefetch=first, query=q_full.tolist(), using="full", limit=k, with_payload=True)
            )
    responses = client.query_batch_points(collection, requests=requests)
    return [[(int(p.id), float(p.score), (p.payload or {}).get("id")) for p in r.points] for r in responses]


def search(
    texts: Sequence[str],
    db: str,
    collection: str = DEFAULT_COLLECTION,
    model: str | None = None,
    layers: int | None = None,
    rank: int | None = None,
    k: int = 10,
    shortlist: int = 100,
    device: str | None = None,
    dtype: str | None = None,
    client: Any = None,
) -> list[list[dict[str, Any]]]:
    """Encode `texts` with the query prompt at the index's setting and search; per text a list of {id, score}.

    `model` defaults to the one recorded in the manifest; a model, `layers` or `rank` that does not match the
    manifest is an error.
    """
    from mlembed.corpus.encoder import EncodeJob, ShardEncoder

    client = client or open_db(db)
    info = index_info(client, collection)
    corpus = info["corpus"]
    setting = corpus["setting"]
    for name, value in (("layers", layers), ("rank", rank)):
        if value is not None and value != setting[name]:
            raise ValueError(
                f"{name}={value} does not match the index, whose corpus was encoded at {name}={setting[name]} "
                f"(setting {setting}); leave it out to use the index's setting"
            )
    job = EncodeJob(
        model or corpus["model"], "", None, layers=setting["layers"], rank=setting["rank"],
        prompt_name=setting["prompt_name"], max_length=setting["max_length"], device=device, dtype=dtype,
    )  # fmt: skip
    encoder = ShardEncoder(job)
    check_fingerprint(corpus, encoder.fingerprint(), f"model {job.model!r}")
    prompts = encoder.model.config.prompts or {}
    queries = encoder.embed(list(texts), "query" if "query" in prompts else None)
    hits = query_vectors(client, queries, info, collection, k, shortlist)
    return [[{"id": doc, "score": round(score, 6)} for _, score, doc in row] for row in hits]


__all__ = [
    "MODES",
    "PRECISIONS",
    "SHORT_PRECISIONS",
    "build_index",
    "collection_config",
    "index_bytes",
    "index_info",
    "open_db",
    "query_vectors",
    "search",
    "store_vectors",
]
