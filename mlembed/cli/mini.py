"""`mlembed mini` (the ml-embed-mini pipeline) and `mlembed data debian | catalogues` (its data sets)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mlembed.cli.common import StrList, add_output, needs, out_path


def cmd_mini(args: argparse.Namespace) -> None:
    needs("mini")
    from mlembed.mini.pipeline import run

    code = run(args)
    if code:
        sys.exit(code)


def add_mini(sub: Any) -> None:
    p = sub.add_parser("mini", help="build ml-embed-mini on this CPU: data, training, export, eval, demo")
    add_mini_arguments(p)
    p.set_defaults(func=cmd_mini)


def add_mini_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=Path, default=None, help="default $MLEMBED_CACHE or ~/.cache/mlembed/mini")
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
        help="override both stages' recipes (mini.json, mini-exits.json), e.g. training.max_steps=20",
    )


def cmd_data_debian(args: argparse.Namespace) -> None:
    from mlembed.mini.debian import build_debian_pairs

    out = out_path(args)
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
    needs("eval")  # pandas and pyarrow write the eval file
    from mlembed.mini.catalogues import build_catalogue_testset

    out = out_path(args)
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


def add_data(sub: Any) -> None:
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


def add_debian_arguments(parser: argparse.ArgumentParser) -> None:
    from mlembed.mini import debian  # standard library and tqdm only: parsing stays light

    add_output(parser, "the data folder to write", positional=True)
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

    add_output(parser, "the data folder to write (eval/catalogues_test.parquet, summary.json)", positional=True)
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
