"""Corpus scale on the CPU: encoding throughput of the engines, and recall / bytes / speed of the search funnel.

    python bench/corpus.py encode   --model MODEL --texts debian/train   # docs/s: plain encode, local, Ray 1 and 2
    python bench/corpus.py heldout  --model MODEL --data debian/test/... # search on the held-out split
    python bench/corpus.py synthetic --rows 1000000                        # search on 1M synthetic vectors

encode: the same texts (passages of the parquet files in `--texts`, cut to `--docs`) through (a) the model's plain
`encode` (the baseline) and (b) `encode_corpus` with the local engine, interleaved round by round (median and min of
`--rounds`), then (c) the Ray engine with 1 worker of 2 CPUs and with 2 workers of 1 CPU (one run each: a Ray run
starts its actors, which import torch, so each is timed whole, start-up included, on a fresh local Ray instance).
At the full setting and at `--layers` (default 3). float32, `--max-length` 128, batch 64.

heldout: queries and passages of a held-out file (`query`, `passage`) encoded at full width; every index built in
embedded Qdrant (`QdrantClient(path=...)`) and queried; recall@10 against exact full-vector search (numpy).

synthetic: `--rows` unit vectors of 384 dims with Matryoshka-like structure (see `synthetic_vectors`); exact top-10
by numpy as the reference; the funnel and the single-vector indexes computed by numpy with exactly the scoring the
Qdrant collections use (checked here on a `--qdrant-rows` subset: embedded Qdrant returns the same top-10). Embedded
Qdrant itself is timed on that subset (build and queries/s) and extrapolated: it is an exact python / numpy search
that stores points one by one, not a 1M-vector engine (see the printed rates).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _util import print_table  # noqa: E402

from mlembed.corpus import encode_corpus, truncate_vectors, write_vectors  # noqa: E402
from mlembed.corpus.search import build_index, index_bytes, open_db, query_vectors, store_vectors  # noqa: E402

# (name, mode, first-stage dim, first-stage precision, shortlist); dim None = full width
CONFIGS = [
    ("full float32", "single", None, "float32", None),
    ("prefix 128 float32", "single", 128, "float32", None),
    ("prefix 128 int8", "single", 128, "int8", None),
    ("prefix 128 binary", "single", 128, "binary", None),
    ("prefix 384 binary", "single", None, "binary", None),
    ("funnel binary 64 -> full, shortlist 200", "funnel", 64, "binary", 200),
    ("funnel binary 128 -> full, shortlist 100", "funnel", 128, "binary", 100),
    ("funnel binary 128 -> full, shortlist 200", "funnel", 128, "binary", 200),
    ("funnel binary 128 -> full, shortlist 500", "funnel", 128, "binary", 500),
    ("funnel int8 128 -> full, shortlist 100", "funnel", 128, "int8", 100),
    ("funnel binary 384 -> full, shortlist 50", "funnel", None, "binary", 50),
    ("funnel binary 384 -> full, shortlist 100", "funnel", None, "binary", 100),
]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("part", choices=("encode", "heldout", "synthetic"))
    p.add_argument("--model", help="ML-Embed folder (encode, heldout)")
    p.add_argument("--texts", help="encode: a parquet file or folder with a `passage` column")
    p.add_argument("--data", help="heldout: a .parquet / .jsonl held-out file (query, passage)")
    p.add_argument("--docs", type=int, default=3000, help="encode: texts per run")
    p.add_argument("--rounds", type=int, default=3, help="encode: interleaved rounds of plain encode vs local")
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--rows", type=int, default=1_000_000, help="synthetic: corpus vectors")
    p.add_argument("--queries", type=int, default=200, help="synthetic: queries")
    p.add_argument("--qdrant-rows", type=int, default=20_000, help="synthetic: rows loaded into embedded Qdrant")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("-o", "--output", type=Path, default=None, help="write the results as JSON")
    return p.parse_args()


# ---------------------------------------------------------------------------------------------------- encoding
def read_texts(path: str, n: int) -> list[str]:
    import pandas as pd

    files = sorted(Path(path).glob("*.parquet")) if Path(path).is_dir() else [Path(path)]
    passages = pd.concat([pd.read_parquet(f, columns=["passage"]) for f in files])["passage"].drop_duplicates()
    return passages.tolist()[:n]


def bench_encode(args: argparse.Namespace) -> dict:
    import torch

    from modeling_mlembed import MLEmbedModel

    torch.set_num_threads(args.threads)
    texts = read_texts(args.texts, args.docs)
    work = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    (work / "in.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    model = MLEmbedModel.from_pretrained(args.model, dtype=torch.float32).eval()
    common = dict(shard_size=1000, batch_size=64, max_length=args.max_length, prompt_name="document")
    results = {"docs": len(texts), "model": args.model, "settings": {}}
    for layers in (None, args.layers):
        times: dict[str, list[float]] = {"plain encode": [], "local engine": []}
        for r in range(args.rounds + 1):  # round 0 warms up
            start = time.perf_counter()
            model.encode(texts, layers=layers, batch_size=64, max_length=args.max_length, prompt_name="document")
            plain = time.perf_counter() - start
            shutil.rmtree(work / "local", ignore_errors=True)
            start = time.perf_counter()
            encode_corpus(args.model, work / "in.jsonl", work / "local", layers=layers, device="cpu", **common)
            local = time.perf_counter() - start
            if r:
                times["plain encode"].append(plain)
                times["local engine"].append(local)
        row = {name: len(texts) / statistics.median(t) for name, t in times.items()}
        row["local / plain (median)"] = statistics.median(times["plain encode"]) / statistics.median(
            times["local engine"]
        )
        row["local / plain (min)"] = min(times["plain encode"]) / min(times["local engine"])
        for workers, cpus in ((1, 2), (2, 1)):
            import ray

            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            shutil.rmtree(work / "ray", ignore_errors=True)
            start = time.perf_counter()
            encode_corpus(
                args.model, work / "in.jsonl", work / "ray", layers=layers, engine="ray", num_workers=workers,
                num_cpus_per_worker=cpus, device="cpu", **common,
            )  # fmt: skip
            row[f"ray {workers} worker(s) x {cpus} CPU"] = len(texts) / (time.perf_counter() - start)
            ray.shutdown()
            same = all(
                (work / "ray" / p.name).read_bytes() == p.read_bytes() for p in (work / "local").glob("shard-*")
            )
            row[f"ray {workers} files == local"] = same
        results["settings"][f"layers={layers or 'full'}"] = row
        print(json.dumps({f"layers={layers or 'full'}": row}), flush=True)
    shutil.rmtree(work)
    return results


# ------------------------------------------------------------------------------------------------------ search
def exact_top(corpus: np.ndarray, queries: np.ndarray, k: int = 10, chunk: int = 200_000) -> np.ndarray:
    """Exact top-k by inner product (unit vectors: cosine), in chunks so 1M x 384 fits comfortably."""
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(corpus), chunk):
        scores = queries @ corpus[start : start + chunk].T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(scores, top, 1)], axis=1)
        best_i = np.concatenate([best_i, top + start], axis=1)
        keep = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return best_i


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def numpy_search(corpus: np.ndarray, queries: np.ndarray, config: tuple, k: int = 10) -> tuple[np.ndarray, float]:
    """The scoring the Qdrant collection of `config` uses, by numpy; returns (top-k rows, queries/s)."""
    _, mode, dim, precision, shortlist = config
    dim = dim or corpus.shape[1]
    ranges = None
    if precision == "int8":
        from mlembed.corpus import calibration_ranges

        ranges = calibration_ranges(truncate_vectors(corpus[:10_000], dim))
    first = np.concatenate(
        [
            store_vectors(truncate_vectors(corpus[s : s + 100_000], dim), precision, ranges)
            for s in range(0, len(corpus), 100_000)
        ]
    )
    start = time.perf_counter()
    q_short = truncate_vectors(queries, dim)
    if mode == "single":
        found = exact_top(first, q_short, k)
    else:
        candidates = exact_top(first, q_short, shortlist)
        scores = np.einsum("qd,qcd->qc", queries, corpus[candidates])
        found = np.take_along_axis(candidates, np.argsort(-scores, axis=1, kind="stable")[:, :k], 1)
    return found, len(queries) / (time.perf_counter() - start)


def config_bytes(config: tuple, width: int) -> tuple[float, float]:
    """(first-stage bytes, total bytes) per document; the rescoring vector is the full float32 one."""
    _, mode, dim, precision, _ = config
    first = index_bytes(dim or width, precision)
    return first, first + (index_bytes(width, "float32") if mode == "funnel" else 0)


def qdrant_runs(corpus: np.ndarray, queries: np.ndarray, db: str, configs: list[tuple]) -> dict[str, dict]:
    """Every config through mlembed.corpus.search into Qdrant (`db`: a folder or :memory:); top-10, build s, q/s."""
    work = Path(tempfile.mkdtemp(prefix="bench-qdrant-"))
    write_vectors(work / "corpus", corpus, shard_size=100_000)
    out = {}
    for config in configs:
        name, mode, dim, precision, shortlist = config
        path = db if db == ":memory:" else str(work / name.replace(" ", "_").replace(">", ""))
        client = open_db(path)
        dim = dim or corpus.shape[1]  # None: the full width (build_index alone would take 128 for a funnel)
        info = build_index(work / "corpus", path, mode=mode, dim=dim, precision=precision, client=client)
        start = time.perf_counter()
        hits = query_vectors(client, queries, info, k=10, shortlist=shortlist or 10)
        qps = len(queries) / (time.perf_counter() - start)
        out[name] = {
            "top": np.array([[r for r, _, _ in h] for h in hits]),
            "build_s": info["build_seconds"],
            "qps": qps,
        }
        client.close()
    shutil.rmtree(work)
    return out


def search_table(corpus: np.ndarray, queries: np.ndarray, qdrant: dict[str, dict] | None, label: str) -> list[dict]:
    truth = exact_top(corpus, queries)
    rows, width = [], corpus.shape[1]
    for config in CONFIGS:
        found, qps = numpy_search(corpus, queries, config)
        first, total = config_bytes(config, width)
        row = {"index": config[0], "recall@10": recall(found, truth), "first-stage B/doc": first,
               "total B/doc": total, "numpy q/s": qps}  # fmt: skip
        if qdrant and config[0] in qdrant:
            q = qdrant[config[0]]
            same = float(np.mean([set(a) == set(b) for a, b in zip(q["top"], found)]))  # near-ties may swap order
            row |= {"qdrant recall@10": recall(q["top"], truth), "qdrant q/s": q["qps"],
                    "qdrant build s": q["build_s"], "same top-10 set as numpy": same}  # fmt: skip
        rows.append(row)
    headers = list(dict.fromkeys(k for r in rows for k in r))
    print(f"\n{label}")
    print_table(headers, [[_fmt(r.get(h, "")) for h in headers] for r in rows])
    return rows


def _fmt(x: object) -> str:
    return f"{x:.4f}" if isinstance(x, float) and x < 10 else (f"{x:,.0f}" if isinstance(x, float) else str(x))


def bench_heldout(args: argparse.Namespace) -> dict:
    import torch

    from mlembed.eval.data import load_retrieval_data
    from modeling_mlembed import MLEmbedModel

    torch.set_num_threads(args.threads)
    data = load_retrieval_data(args.data)
    model = MLEmbedModel.from_pretrained(args.model, dtype=torch.float32).eval()
    enc = dict(batch_size=64, max_length=args.max_length)
    corpus = model.encode(data.corpus, prompt_name="document", **enc)
    queries = model.encode(data.queries, prompt_name="query", **enc)
    qdrant = qdrant_runs(corpus, queries, "path", CONFIGS)
    rows = search_table(corpus, queries, qdrant, f"held-out split: {len(corpus)} passages, {len(queries)} queries")
    return {"passages": len(corpus), "queries": len(queries), "rows": rows}


def synthetic_vectors(n: int, dim: int = 384, seed: int = 0, clusters: int | None = None) -> np.ndarray:
    """Unit vectors with Matryoshka-like structure: dimension j has scale (1 + j / 32)^-1, so the leading dims carry
    most of the energy (as MRL training arranges); documents are cluster centres plus noise (n / 100 clusters of
    about 100), so each has real near neighbours. Generated in chunks (1M x 384 float32 is 1.5 GB)."""
    rng = np.random.default_rng(seed)
    scale = (1 + np.arange(dim) / 32) ** -1.0
    clusters = clusters or max(1, n // 100)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32) * scale
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        noise = rng.standard_normal((stop - start, dim)).astype(np.float32) * scale * 0.8
        out[start:stop] = truncate_vectors(centres[rng.integers(0, clusters, stop - start)] + noise, dim)
    return out


def synthetic_queries(corpus: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    """A random document plus noise of the same shape (a paraphrase of it)."""
    rng = np.random.default_rng(seed)
    scale = (1 + np.arange(corpus.shape[1]) / 32) ** -1.0
    base = corpus[rng.integers(0, len(corpus), n)]
    noise = rng.standard_normal(base.shape).astype(np.float32) * scale * 0.05
    return truncate_vectors(base + noise, corpus.shape[1])


def bench_synthetic(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    corpus = synthetic_vectors(args.rows)
    queries = synthetic_queries(corpus, args.queries)
    print(f"generated {args.rows:,} x {corpus.shape[1]} in {time.perf_counter() - start:.0f} s", flush=True)
    rows = search_table(corpus, queries, None, f"synthetic: {args.rows:,} vectors, {args.queries} queries (numpy)")
    small = corpus[: args.qdrant_rows]
    small_q = synthetic_queries(small, 50, seed=2)
    picked = [
        c for c in CONFIGS if c[0] in ("full float32", "prefix 128 binary", "funnel binary 128 -> full, shortlist 200")
    ]
    results = {"rows": rows, "qdrant_subset": {}}
    for db in (":memory:", "path"):
        qdrant = qdrant_runs(small, small_q, db, picked)
        sub = search_table(small, small_q, qdrant, f"embedded Qdrant ({db}) on the first {len(small):,} vectors")
        results["qdrant_subset"][db] = sub
        if db == ":memory:":  # the path mode stores point by point: one small subset is enough to see its rate
            small, small_q = small[:5000], small_q
    return results


def main() -> None:
    args = parse_args()
    result = {"encode": bench_encode, "heldout": bench_heldout, "synthetic": bench_synthetic}[args.part](args)
    if args.output:
        args.output.write_text(json.dumps(result, indent=1, default=lambda o: o.tolist()))


if __name__ == "__main__":
    main()
