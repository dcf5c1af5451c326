"""`mlembed` command line: encode, convert, export, push, train, eval."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger("mlembed")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.replace(",", " ").split()]


def _add_axes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layers", type=int, default=None, help="exit depth k (default: all layers)")
    parser.add_argument("--dim", type=int, default=None, help="output dims kept (default: all)")
    parser.add_argument("--rank", type=int, default=None, help="MEL rank (default: the maximum)")


def cmd_encode(args: argparse.Namespace) -> None:
    import numpy as np

    from modeling_mlembed import MLEmbedModel

    model = MLEmbedModel.from_pretrained(args.model)
    emb = model.encode(args.text, layers=args.layers, dim=args.dim, rank=args.rank, prompt_name=args.prompt)
    if args.output:
        np.save(args.output, emb)
        logger.info("wrote %s %s", args.output, emb.shape)
    else:
        print(json.dumps([[round(float(x), 6) for x in row] for row in emb]))


def cmd_convert(args: argparse.Namespace) -> None:
    from mlembed import convert

    axes = {k: v for k, v in {"exit_layers": args.exit_layers, "matryoshka_dims": args.dims}.items() if v}
    if args.released:
        convert.convert_released(args.base, args.out, **axes)
    else:
        convert.convert_base(args.base, args.out, rank=args.rank, dtype=args.dtype, **axes)
    print(f"wrote {args.out}")


def cmd_export(args: argparse.Namespace) -> None:
    from mlembed import convert

    if args.mode == "compat" or (args.mode == "slim" and args.compat):
        if args.mode == "slim" and args.dim is not None:
            logger.warning("a plain backbone folder cannot record --dim; truncate to %d dims when serving", args.dim)
        convert.export_compat(args.src, args.out, layers=args.layers, rank=args.rank)
        print(f"wrote plain backbone folder {args.out}")
    elif args.mode == "slim":
        info = convert.export_slim(args.src, args.out, layers=args.layers, rank=args.rank, dim=args.dim)
        print(
            f"wrote {args.out}: layers={info['layers']} rank={info['rank']} dim={info['dim']}; weights "
            f"{info['bytes_before'] / 2**20:.1f} MiB -> {info['bytes_after'] / 2**20:.1f} MiB "
            f"({100 * info['saving']:.0f}% smaller)"
        )
    else:
        from mlembed import hub

        hub.export_hub(args.src, args.out, repo_id=args.repo_id)
        print(f"wrote Hub folder {args.out}")


def cmd_push(args: argparse.Namespace) -> None:
    from mlembed import hub

    print(hub.push_to_hub(args.folder, args.repo_id, private=args.private))


def cmd_train(args: argparse.Namespace) -> None:
    from mlembed import distributed
    from mlembed.train.config import load_config
    from mlembed.train.recipe import run

    resume = True if args.resume == "true" else args.resume
    try:
        final = run(load_config(args.config, args.set), resume_from_checkpoint=resume)
    finally:
        distributed.close()
    print(f"wrote {final}")


def cmd_eval(args: argparse.Namespace) -> None:
    from mlembed.eval.sweep import run_eval_cli

    code = run_eval_cli(args)
    if code:
        sys.exit(code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlembed", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("encode", help="embed texts; prints JSON or writes .npy")
    p.add_argument("model")
    p.add_argument("text", nargs="+")
    _add_axes(p)
    p.add_argument("--prompt", default=None, help="prompt name from the model config (query, document)")
    p.add_argument("--output", "-o", type=Path, default=None, help="write a .npy file instead of JSON")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("convert", help="backbone folder -> ML-Embed folder (SVD-initialised MEL)")
    p.add_argument("base", help="backbone folder or Hub id (with --released: a reference release folder)")
    p.add_argument("out")
    p.add_argument("--rank", type=int, default=None, help="MEL rank r (default: no factorised embedding)")
    p.add_argument("--exit-layers", type=_ints, default=None, help="MLL exits, e.g. '1,2,4,6'")
    p.add_argument("--dims", type=_ints, default=None, help="MRL dims, e.g. '24,48,96,192,384'")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--released", action="store_true", help="import a release folder with U.pth and V.pth")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("export", help="ML-Embed folder -> compat / slim / hub folder")
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--mode", choices=["compat", "slim", "hub"], required=True)
    _add_axes(p)
    p.add_argument("--compat", action="store_true", help="with --mode slim: write a plain backbone folder")
    p.add_argument("--repo-id", default=None, help="with --mode hub: the Hub repo the folder is for (org/name)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("push", help="upload a Hub folder (mlembed export --mode hub) to the Hugging Face Hub")
    p.add_argument("folder")
    p.add_argument("repo_id")
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("train", help="run a training recipe (configs/*.json) with MLEmbedTrainer")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument(
        "--set", nargs="*", action="extend", default=[], metavar="SECTION.KEY=VALUE", help="override config values"
    )
    p.add_argument("--resume", default=None, help="checkpoint folder to resume from, or 'true' for the latest")
    p.set_defaults(func=cmd_train)

    from mlembed.eval.sweep import add_eval_arguments

    p = sub.add_parser("eval", help="quality and cost of every (layers, dim, rank) setting on local data")
    add_eval_arguments(p)
    p.set_defaults(func=cmd_eval)

    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"mlembed {args.command}: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
