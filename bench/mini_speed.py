"""Encode speed of ml-embed-mini at full and at each cut against stock all-MiniLM-L6-v2, like for like.

    python bench/mini_speed.py                                # the mini cache of `mlembed mini` (MLEMBED_CACHE)
    python bench/mini_speed.py --cache-dir DIR --texts 512 --rounds 7 --threads 2

Every case encodes the same passages (the held-out Debian split's first `--texts`, no prompt: passages get none, so
every model sees the same tokens), with the same batch size, max length (128 tokens), threads and dtype (fp32), in
`torch.inference_mode`. The cases alternate round by round after a warm-up (A B C ... A B C ...), and the median
and the minimum of each are printed as texts/s and as a ratio to stock MiniLM through sentence-transformers, the
baseline of the same run:

* stock all-MiniLM-L6-v2 through sentence-transformers (the baseline) and through ML-Embed's `encode` (its converted
  folder: what `encode` itself costs);
* ml-embed-mini's Hub folder through sentence-transformers with stock code (no remote code: the full setting);
* ml-embed-mini through `encode` at full, layers=3, rank=64, dim=96 and all three.

Goal: ml-embed-mini at full >= 0.97x stock. A gap is explained with `--profile` (torch.profiler of one batch of
each, top operators by self CPU time).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the remote-code modules, also from a plain checkout

from _util import busy_warning, median_times  # noqa: E402

SETTINGS = {
    "full": {},
    "layers=3": {"layers": 3},
    "rank=64": {"rank": 64},
    "dim=96": {"dim": 96},
    "all three": {"layers": 3, "rank": 64, "dim": 96},
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache-dir", type=Path, default=None, help="the mini cache (default $MLEMBED_CACHE or ~/.cache)")
    p.add_argument("--texts", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--profile", action="store_true", help="profile one batch of stock and mini full")
    return p.parse_args()


def cases(paths, texts: list[str], batch_size: int, max_length: int) -> dict:
    """{name: zero-argument encode of `texts`}: every case with the same texts, batch size and max length."""
    from sentence_transformers import SentenceTransformer

    from mlembed.mini.pipeline import minilm_path
    from modeling_mlembed import MLEmbedModel

    stock_st = SentenceTransformer(minilm_path(), device="cpu")
    mini_st = SentenceTransformer(str(paths.hub), device="cpu")  # stock code: the Hub folder's full setting
    for model in (stock_st, mini_st):
        model.max_seq_length = max_length
    stock = MLEmbedModel.from_pretrained(paths.stock, dtype=torch.float32).eval()
    mini = MLEmbedModel.from_pretrained(paths.model, dtype=torch.float32).eval()
    encode = dict(batch_size=batch_size, max_length=max_length)
    st_kwargs = dict(batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
    out = {
        "stock MiniLM, sentence-transformers": lambda: stock_st.encode(texts, **st_kwargs),
        "stock MiniLM, encode": lambda: stock.encode(texts, **encode),
        "mini full, sentence-transformers": lambda: mini_st.encode(texts, **st_kwargs),
    }
    for name, setting in SETTINGS.items():
        out[f"mini {name}, encode"] = lambda setting=setting: mini.encode(texts, **setting, **encode)
    return out


def profile(fns: dict, names: list[str]) -> None:
    from torch.profiler import ProfilerActivity, profile

    for name in names:
        fns[name]()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fns[name]()
        print(f"\n{name}: top operators by self CPU time")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main() -> int:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    from mlembed.eval.data import load_retrieval_data
    from mlembed.mini.pipeline import MiniPaths, default_cache_dir

    paths = MiniPaths((args.cache_dir or default_cache_dir()).expanduser())
    data = load_retrieval_data(paths.eval_file("debian"))
    texts = data.corpus[: args.texts]
    fns = cases(paths, texts, args.batch_size, args.max_length)
    with torch.inference_mode():
        times = median_times(fns, repeats=args.rounds, warmup=1)
    busy_warning(times)
    base = times["stock MiniLM, sentence-transformers"]
    print(
        f"\n{len(texts)} passages, batch {args.batch_size}, max length {args.max_length}, {args.threads} threads, fp32"
    )
    print("| case | texts/s (median) | x stock (median / min) |\n|---|---:|---:|")
    for name, (med, low, _) in times.items():
        print(f"| {name} | {len(texts) / med:.0f} | {base[0] / med:.2f} / {base[1] / low:.2f} |")
    if args.profile:
        profile(fns, ["stock MiniLM, sentence-transformers", "mini full, encode"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
