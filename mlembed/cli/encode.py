"""`mlembed encode` (texts to vectors, with the elastic model or an ONNX export) and `mlembed eval` (the sweep)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mlembed.cli.common import IntList, add_output, add_runtime, add_setting, load_model, needs


def cmd_encode(args: argparse.Namespace) -> None:
    import numpy as np

    if args.onnx:
        emb = _onnx_embedder(args).encode(args.text, prompt_name=args.prompt, batch_size=args.batch_size)
    else:
        if args.int8:
            raise ValueError("--int8 runs the int8 graph of an ONNX export; add --onnx")
        model = load_model(args.model, args)
        emb = model.encode(
            args.text,
            layers=args.layers,
            dim=args.dim,
            rank=args.rank,
            prompt_name=args.prompt,
            batch_size=args.batch_size,
            max_length=args.max_length,
        )
    if args.output:
        np.save(args.output, emb)
        print(f"wrote {args.output} {emb.shape}", file=args.results)
    else:
        print(json.dumps([[round(float(x), 6) for x in row] for row in emb]), file=args.results)


def _onnx_embedder(args: argparse.Namespace) -> Any:
    """The ONNX export named by MODEL, checked against the requested setting (an export computes one)."""
    needs("serve")
    from mlembed.serving import OnnxEmbedder, read_setting

    setting = read_setting(args.model)
    asked = {"layers": args.layers, "rank": args.rank, "dim": args.dim}
    differ = {k: v for k, v in asked.items() if v is not None and v != setting[k]}
    if differ:
        baked = ", ".join(f"{k}={setting[k]}" for k in asked)
        wanted = ", ".join(f"{k}={v}" for k, v in differ.items())
        raise ValueError(f"this ONNX export computes {baked}; it cannot give {wanted} (export that setting)")
    if args.dtype not in ("auto", "float32"):
        raise ValueError(f"an ONNX export runs in float32 (or int8 with --int8), not --dtype {args.dtype}")
    import onnxruntime as ort

    device = args.device or "cpu"
    provider = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}.get(device.split(":")[0])
    if provider not in ort.get_available_providers():
        raise ValueError(
            f"--device {device} is not available to ONNX Runtime; available: {ort.get_available_providers()}"
        )
    return OnnxEmbedder(args.model, int8=args.int8, providers=[provider], max_length=args.max_length)


def add_encode(sub: Any) -> None:
    p = sub.add_parser("encode", help="embed texts; prints JSON or writes .npy")
    p.add_argument("model", help="ML-Embed folder or Hub id")
    p.add_argument("text", nargs="+")
    add_setting(p)
    p.add_argument("--prompt", default=None, help="prompt name from the model config (query, document)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--max-length", type=int, default=None, help="tokens per text (default: the model's max_seq_length)"
    )
    p.add_argument("--onnx", action="store_true", help="MODEL is an ONNX export (mlembed export --mode onnx)")
    p.add_argument("--int8", action="store_true", help="with --onnx: run the int8 graph")
    add_runtime(p)
    add_output(p, "write a .npy file instead of printing JSON")
    p.set_defaults(func=cmd_encode)


def cmd_eval(args: argparse.Namespace) -> None:
    needs("eval")
    from mlembed.eval.data import load_retrieval_data
    from mlembed.eval.sweep import markdown_table, sweep, write_results

    data = load_retrieval_data(args.data)  # validate before loading a large model
    model = load_model(args.model, args)
    results = sweep(model, data, args.depths, args.dims, args.ranks, args.grid, args.batch_size, args.max_length)
    write_results(results, args.output or Path("eval_out"), plot=not args.no_plot)
    print(markdown_table(results), end="", file=args.results)


def add_eval(sub: Any) -> None:
    p = sub.add_parser("eval", help="quality and cost of every (layers, dim, rank) setting on local data")
    p.add_argument("model", help="ML-Embed folder (or Hub id in the local cache)")
    p.add_argument("--data", required=True, help=".jsonl or .parquet with columns query, passage[, language]")
    p.add_argument("--depths", nargs="+", action=IntList, default=None, help="exit depths to try, e.g. 2,3")
    p.add_argument("--dims", nargs="+", action=IntList, default=None, help="output dims to try")
    p.add_argument("--ranks", nargs="+", action=IntList, default=None, help="MEL ranks to try")
    p.add_argument("--grid", choices=("axes", "full"), default="axes", help="one axis at a time, or every combination")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--max-length", type=int, default=None, help="tokens per text (default: the model's max_seq_length)"
    )
    p.add_argument("--no-plot", action="store_true", help="skip plot.png (no matplotlib needed)")
    add_output(p, "folder for table.md, results.json, plot.png (default eval_out)")
    add_runtime(p, dtype="float32")
    p.set_defaults(func=cmd_eval)
