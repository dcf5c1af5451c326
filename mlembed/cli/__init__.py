"""`mlembed`: the command line of ML-Embed, one convention for every command.

`mlembed <command>` is the one entry point (`python -m mlembed.cli` is the same, for `accelerate launch -m` and
`torchrun -m`). Each command sits beside its parser in the module of its group: `encode` (encode, eval), `export`
(convert, export, push, cards), `train`, `corpus` (encode-corpus, index, search) and `mini` (mini, data); `common`
holds the conventions they share. The commands call the library; parsing imports nothing heavy (no torch).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence

from mlembed.cli import corpus, encode, export, mini, train
from mlembed.cli.common import MODULE_EXTRA, MissingExtra


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlembed", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    encode.add_encode(sub)
    export.add_convert(sub)
    export.add_export(sub)
    export.add_push(sub)
    train.add_train(sub)
    encode.add_eval(sub)
    corpus.add_commands(sub)
    mini.add_mini(sub)
    export.add_cards(sub)
    mini.add_data(sub)
    return parser


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line. argparse fills an optional positional (OUT) before it has seen the flags, so an OUT
    written after them (`convert BASE --mel-rank 16 OUT`) is left over: it is taken as OUT here."""
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
