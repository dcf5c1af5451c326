"""How much of a model's quality any 96-dim view keeps: the prefix (what `dim=96` does), the 96 dims of highest
variance, and the top 96 principal components (PCA, the best linear 96-dim view in the least-squares sense).

    python bench/truncation.py --models stock,plain      # ablation rows of bench/ablation.py (and the stock model)

Why: the goal "dim=96 keeps >= 95% of full" is only reachable if 96 dims can hold that much; PCA bounds what an
orthogonal output rotation could add to MRL training. The variance order and PCA are fit on 1,500 training
passages (never on the held-out sets). Prints nDCG@10 on both held-out sets of the mini pipeline, and each view's
ratio to the model's own full score.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def ndcg(queries: np.ndarray, corpus: np.ndarray, relevant: list[set[int]]) -> float:
    from mlembed.eval.metrics import retrieval_metrics

    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    corpus = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    return retrieval_metrics(queries @ corpus.T, relevant)["ndcg_at_10"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="stock,plain", help="comma-separated: stock and/or bench/ablation.py rows")
    p.add_argument("--dim", type=int, default=96)
    p.add_argument("--cache-dir", type=Path, default=None, help="the mini cache (default $MLEMBED_CACHE or ~/.cache)")
    p.add_argument("--fit", type=int, default=1500, help="training passages to fit the variance order and PCA on")
    args = p.parse_args()

    import pandas as pd

    from mlembed.mini import pipeline
    from modeling_mlembed import MLEmbedModel

    paths = pipeline.MiniPaths((args.cache_dir or pipeline.default_cache_dir()).expanduser())
    sets = pipeline.load_eval_sets(paths)
    train = pd.concat(pd.read_parquet(f) for f in sorted(glob.glob(str(paths.data / "train" / "*.parquet"))))
    fit_texts = train["passage"].sample(args.fit, random_state=0).tolist()
    d = args.dim
    print(f"| model | set | full | prefix {d} | top-variance {d} | PCA {d} |\n|---|---|---:|---:|---:|---:|")
    for name in args.models.split(","):
        folder = paths.stock if name == "stock" else paths.root / "ablation" / name / "final"
        model = MLEmbedModel.from_pretrained(folder).eval()
        prompts = model.config.prompts or {}  # as the pipeline's evaluation (mlembed.eval.sweep) uses them
        query, document = ("query" if "query" in prompts else None), ("document" if "document" in prompts else None)
        fit = model.encode(fit_texts, prompt_name=document, max_length=pipeline.EVAL_MAX_LENGTH)  # (F, D), unit
        by_variance = np.argsort(-fit.var(0))[:d]
        _, _, components = np.linalg.svd(fit - fit.mean(0), full_matrices=False)  # rows: principal axes
        pca = components[:d].T  # (D, d)
        for set_name, data in sets.items():
            q = model.encode(data.queries, prompt_name=query, max_length=pipeline.EVAL_MAX_LENGTH)
            c = model.encode(data.corpus, prompt_name=document, max_length=pipeline.EVAL_MAX_LENGTH)
            full = ndcg(q, c, data.relevant)
            views = [
                ndcg(q[:, :d], c[:, :d], data.relevant),
                ndcg(q[:, by_variance], c[:, by_variance], data.relevant),
                ndcg(q @ pca, c @ pca, data.relevant),
            ]
            cells = " | ".join(f"{v:.3f} ({v / full:.0%})" for v in views)
            print(f"| {name} | {set_name} | {full:.3f} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
