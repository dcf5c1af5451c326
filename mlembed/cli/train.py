"""`mlembed train`: a training recipe (JSON config) with `MLEmbedTrainer`, resumable, on any launcher."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mlembed.cli.common import add_output, add_runtime, needs


def cmd_train(args: argparse.Namespace) -> None:
    needs("train")
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


def add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="run a training recipe (JSON config) with MLEmbedTrainer")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument(
        "--set", nargs="+", action="extend", default=[], metavar="SECTION.KEY=VALUE", help="override config values"
    )
    p.add_argument("--resume", action="store_true", help="resume from the latest checkpoint in the output folder")
    p.add_argument("--resume-from", default=None, metavar="CHECKPOINT", help="resume from this checkpoint folder")
    add_output(p, "the run folder (training.output_dir)")
    add_runtime(p)
    p.set_defaults(func=cmd_train)
