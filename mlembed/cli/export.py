"""`mlembed convert`, `export`, `push` and `cards`: ML-Embed folders in and out, and the model cards."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from mlembed.cli.common import IntList, add_output, add_runtime, add_setting, needs, out_path

logger = logging.getLogger("mlembed")


def cmd_convert(args: argparse.Namespace) -> None:
    from mlembed.export import convert

    out = out_path(args)
    mel_rank = args.mel_rank
    if args.old_rank is not None:  # `convert --rank` before it was named apart from the inference setting's --rank
        if mel_rank is not None and mel_rank != args.old_rank:
            raise ValueError(f"--rank {args.old_rank} and --mel-rank {mel_rank} differ; give --mel-rank only")
        logger.warning("convert --rank is now --mel-rank (the factorisation rank); --rank still works for now")
        mel_rank = args.old_rank
    axes = {k: v for k, v in {"exit_layers": args.exit_layers, "matryoshka_dims": args.dims}.items() if v}
    if args.released:
        convert.convert_released(args.base, out, **axes)
    else:
        dtype = "float32" if args.dtype == "auto" else args.dtype
        convert.convert_base(
            args.base, out, rank=mel_rank, dtype=dtype, trust_remote_code=args.trust_remote_code, **axes
        )
    print(f"wrote {out}", file=args.results)


def add_convert(sub: Any) -> None:
    p = sub.add_parser("convert", help="backbone folder -> ML-Embed folder (SVD-initialised MEL)")
    p.add_argument("base", help="backbone folder or Hub id (with --released: a reference release folder)")
    add_output(p, "the ML-Embed folder to write", positional=True)
    p.add_argument(
        "--mel-rank",
        type=int,
        default=None,
        help="MEL rank r: the factorisation rank of the token embedding (default: none, a dense embedding)",
    )
    p.add_argument(
        "--rank",
        dest="old_rank",
        type=int,
        default=None,
        help="deprecated alias of --mel-rank (elsewhere --rank picks the rank a model runs at)",
    )
    p.add_argument("--exit-layers", nargs="+", action=IntList, default=None, help="MLL exits, e.g. 1,2,4,6")
    p.add_argument("--dims", nargs="+", action=IntList, default=None, help="MRL dims, e.g. 24,48,96,192,384")
    p.add_argument("--released", action="store_true", help="import a release folder with U.pth and V.pth")
    p.add_argument("--trust-remote-code", action="store_true", help="let a backbone outside transformers run its code")
    add_runtime(p, dtype="float32")
    p.set_defaults(func=cmd_convert)


def cmd_export(args: argparse.Namespace) -> None:
    from mlembed.export.compat import export_compat
    from mlembed.export.slim import export_slim

    out = out_path(args)
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
        needs("serve")
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


def add_export(sub: Any) -> None:
    p = sub.add_parser("export", help="ML-Embed folder -> compat / slim / hub / onnx folder")
    p.add_argument("src", help="ML-Embed folder")
    add_output(p, "the folder to write", positional=True)
    p.add_argument("--mode", choices=["compat", "slim", "hub", "onnx"], required=True)
    add_setting(p)
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
    add_runtime(p, device=False)  # an export computes nothing worth a device; --dtype is the written weights' dtype
    p.set_defaults(func=cmd_export)


def cmd_push(args: argparse.Namespace) -> None:
    from mlembed.export.hub import push_to_hub

    print(push_to_hub(args.folder, args.repo_id, private=args.private), file=args.results)


def add_push(sub: Any) -> None:
    p = sub.add_parser("push", help="upload a Hub folder (mlembed export --mode hub) to the Hugging Face Hub")
    p.add_argument("folder")
    p.add_argument("repo_id", help="org/name")
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=cmd_push)


def cmd_cards(args: argparse.Namespace) -> None:
    from mlembed.export.cards import write_cards

    paths = write_cards(args.output or Path("model_cards"))
    print(f"wrote {len(paths)} files to {paths[0].parent}", file=args.results)


def add_cards(sub: Any) -> None:
    p = sub.add_parser("cards", help="render the model cards of the released sizes")
    add_output(p, "folder for <size>.md and template.md (default model_cards)")
    p.set_defaults(func=cmd_cards)
