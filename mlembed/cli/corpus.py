"""`mlembed encode-corpus`, `index` and `search`: a corpus encoded once at full width, searched in Qdrant."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mlembed.cli.common import add_output, add_runtime, needs, out_path


def cmd_encode_corpus(args: argparse.Namespace) -> None:
    # the local engine needs no Ray; int8 / binary go through sentence-transformers' quantize_embeddings
    modules = ["pyarrow"] + (["ray"] if args.engine == "ray" else [])
    modules += ["sentence_transformers"] if args.precision in ("int8", "binary") else []
    needs("corpus", modules)
    from mlembed.corpus import encode_corpus, job_summary

    manifest = encode_corpus(
        args.model,
        args.input,
        out_path(args),
        id_column=args.id_column,
        text_column=args.text_column,
        layers=args.layers,
        rank=args.rank,
        prompt_name=args.prompt or None,
        precision=args.precision,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        max_length=args.max_length,
        calibration_size=args.calibration_size,
        engine=args.engine,
        num_workers=args.num_workers,
        num_cpus_per_worker=args.num_cpus_per_worker,
        num_gpus_per_worker=args.num_gpus_per_worker,
        address=args.address,
        device=args.device,
        dtype=None if args.dtype == "auto" else args.dtype,
    )
    print(json.dumps(job_summary(manifest)), file=args.results)


def cmd_index(args: argparse.Namespace) -> None:
    needs("corpus", ["pyarrow", "qdrant_client"] + (["sentence_transformers"] if args.precision == "int8" else []))
    from mlembed.corpus.search import build_index

    info = build_index(
        args.corpus, args.db, args.collection, args.mode, args.dim, args.precision, args.recreate, args.batch_size
    )
    keys = ("mode", "dim", "precision", "width", "full_precision", "rows", "build_seconds", "bytes_per_doc")
    print(json.dumps({k: info[k] for k in keys}), file=args.results)


def cmd_search(args: argparse.Namespace) -> None:
    needs("corpus", ["qdrant_client"])
    from mlembed.corpus.search import search

    hits = search(
        args.query,
        args.db,
        args.collection,
        model=args.model,
        layers=args.layers,
        rank=args.rank,
        k=args.k,
        shortlist=args.shortlist,
        device=args.device,
        dtype=None if args.dtype == "auto" else args.dtype,
    )
    print(
        json.dumps([{"query": q, "hits": h} for q, h in zip(args.query, hits)], ensure_ascii=False), file=args.results
    )


def add_commands(sub: Any) -> None:
    """encode-corpus, index, search: a corpus encoded once at full width, searched through a vector database."""
    p = sub.add_parser("encode-corpus", help="embed a large corpus into resumable parquet shards (local or Ray)")
    p.add_argument("model", help="ML-Embed folder or Hub id")
    p.add_argument("input", help=".jsonl, .parquet (file or folder) or a Hugging Face dataset saved to disk")
    add_output(p, "the output folder (shards + manifest.json)", positional=True)
    p.add_argument("--id-column", default="id")
    p.add_argument("--text-column", default="text")
    p.add_argument("--layers", type=int, default=None, help="exit depth k (default: all layers)")
    p.add_argument("--rank", type=int, default=None, help="MEL rank (default: the maximum)")
    p.add_argument("--prompt", default="document", help="prompt name from the model config ('' for none)")
    p.add_argument("--precision", default="float32", choices=("float32", "float16", "int8", "binary"))
    p.add_argument("--shard-size", type=int, default=100_000, help="rows per output shard (the unit of resumption)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=None, help="tokens per text (default: the model's)")
    p.add_argument("--calibration-size", type=int, default=10_000, help="texts sampled for the int8 ranges")
    p.add_argument("--engine", default="local", choices=("local", "ray"), help="one process, or a Ray Data actor pool")
    p.add_argument("--num-workers", type=int, default=1, help="--engine ray: actors, each with a model copy")
    p.add_argument("--num-cpus-per-worker", type=float, default=1, help="--engine ray: CPUs (and torch threads)")
    p.add_argument("--num-gpus-per-worker", type=float, default=0, help="--engine ray: GPUs per actor")
    p.add_argument(
        "--address", default=None, help="--engine ray: an existing cluster ('auto'); default a new local one"
    )
    add_runtime(p)
    p.set_defaults(func=cmd_encode_corpus)

    p = sub.add_parser("index", help="load an encoded corpus into Qdrant (shortlist + rescoring vectors)")
    p.add_argument("corpus", help="folder written by encode-corpus")
    p.add_argument("--db", required=True, help="embedded Qdrant folder, :memory:, or a server URL (http://...)")
    p.add_argument("--collection", default="corpus")
    p.add_argument("--mode", default="funnel", choices=("funnel", "single"), help="prefix shortlist + full rescoring")
    p.add_argument(
        "--dim", type=int, default=None, help="shortlist dims (funnel, default 128) or the vector's (single)"
    )
    p.add_argument("--precision", default=None, choices=("binary", "int8", "float32"),
                   help="of that vector (default: binary for funnel, float32 for single)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--recreate", action="store_true", help="replace an existing collection of that name")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="search an index with the query prompt at the corpus' setting")
    p.add_argument("db", help="embedded Qdrant folder or server URL (as given to index --db)")
    p.add_argument("query", nargs="+", help="one or more query texts")
    p.add_argument("--collection", default="corpus")
    p.add_argument("--model", default=None, help="default: the model recorded in the corpus manifest")
    p.add_argument("--layers", type=int, default=None, help="must match the corpus (default: its setting)")
    p.add_argument("--rank", type=int, default=None, help="must match the corpus (default: its setting)")
    p.add_argument("-k", type=int, default=10, help="results per query")
    p.add_argument("--shortlist", type=int, default=100, help="funnel: candidates the short vector passes on")
    add_runtime(p)
    p.set_defaults(func=cmd_search)
