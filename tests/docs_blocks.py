"""The code blocks of README.md and docs/*.md, and the runner that executes them as a user would.

`tests/test_docs.py` collects the blocks and runs this file once (`python tests/docs_blocks.py SPEC.json`) in a
fresh process whose Hugging Face cache is private and offline: the runner builds one tiny random model, installs
it in that cache under every Hub id the pages use (`ml-embed/8b`, ...) and places it as every local folder they
load (`ml-embed-mini`, ...), then runs the blocks of each page in order in the page's own working folder, so a
block can use what an earlier block of the page wrote. Python blocks run with `exec`; shell blocks run line by line,
`mlembed` commands in this process through `mlembed.cli.main` (one torch import for all), other lines in bash.
Results go to SPEC's `results` file after every block.

A block is not run when the line before its fence (blank lines allowed) is `<!-- docs-test: skip (reason) -->`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
SKIP = re.compile(r"^<!--\s*docs-test:\s*skip\b\s*(?:\((?P<reason>.*)\))?\s*-->\s*$")
SHELL = {"bash", "sh", "console", "shell"}
RUNNABLE = SHELL | {"python"}

# What the pages load, all played by one tiny random Qwen3 (hidden 256, 16 layers, vocab 300): big enough for
# every setting they name (layers=16, dim=256, rank=256; layers=3, dim=96, rank=64), small enough to train a step.
HUB_IDS = ["ml-embed/8b", "ml-embed/0.6b", "ml-embed/mini"]
FOLDERS = ["ml-embed-mini", "ml-embed-0.6b"]
VOCAB = 300
AXES = {
    "mel_rank": 256,
    "mel_ranks": [64, 128, 256],
    "exit_layers": [1, 2, 3, 4, 8, 16],
    "matryoshka_dims": [24, 48, 96, 128, 256],
    "max_seq_length": 128,
}


@dataclass
class Block:
    page: str  # relative to the repository root
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    skip: str | None  # None: no marker; else the marker's reason ("" when it gives none)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def read_blocks(path: Path) -> list[Block]:
    """Every fenced block of a markdown page, with the skip marker that precedes it (if any)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start, lang = i, match.group(1).lower()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), len(lines))
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marker = SKIP.match(lines[before].strip()) if before >= 0 else None
        skip = (marker.group("reason") or "").strip() if marker else None
        page = path.relative_to(ROOT).as_posix()
        blocks.append(Block(page, start + 1, lang, "\n".join(lines[start + 1 : end]) + "\n", skip))
        i = end + 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in read_blocks(page)]


# ------------------------------------------------------------------------------------------------------ the runner
def shell_commands(code: str, lang: str) -> list[str]:
    """Logical lines of a shell block (continuations joined, comments and blank lines dropped); for `console`
    blocks only the `$ ` lines."""
    lines = code.splitlines()
    if lang == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    joined, current = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        joined.append(current + line)
        current = ""
    return [line for line in joined if line.strip() and not line.strip().startswith("#")]


def mlembed_argv(command: str) -> list[str] | None:
    """The arguments of a plain `mlembed ...` command (no pipes, redirections, variables), else None."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    tokens = list(lexer)
    if not tokens or tokens[0] != "mlembed" or "$" in command or "`" in command:
        return None
    if any(token and all(c in "();<>|&" for c in token) for token in tokens):
        return None
    return tokens[1:]


def run_shell(code: str, lang: str) -> str:
    """Each logical line in turn: `mlembed ...` in this process, anything else in bash."""
    from mlembed import cli

    out = io.StringIO()
    for command in shell_commands(code, lang):
        argv = mlembed_argv(command)
        if argv is None:
            proc = subprocess.run(["bash", "-euo", "pipefail", "-c", command], capture_output=True, text=True)
            out.write(proc.stdout)
            if proc.returncode:
                raise RuntimeError(f"`{command}` exited with {proc.returncode}\n{proc.stderr[-3000:]}")
            continue
        err = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = cli.main(argv)
            except SystemExit as exit:  # argparse's --help / usage errors
                status = exit.code or 0
        if status:
            raise RuntimeError(f"`{command}` exited with {status}\n{err.getvalue()[-3000:]}")
    return out.getvalue()


def run_python(block: Block) -> str:
    out = io.StringIO()
    namespace = {"__name__": "__main__"}
    with contextlib.redirect_stdout(out):
        exec(compile(block.code, block.id, "exec"), namespace)
    return out.getvalue()


def build_fixture(work: Path) -> Path:
    """The tiny model as a Hub folder, installed in the (private) HF cache under every id in HUB_IDS."""
    import torch
    from transformers import Qwen3Config

    sys.path.insert(0, str(ROOT))
    from conftest import tiny_tokenizer  # the tests' own character-level tokenizer (this folder is on sys.path)

    from configuration_mlembed import MLEmbedConfig
    from mlembed.export import convert, hub
    from modeling_mlembed import MLEmbedModel

    torch.manual_seed(0)
    backbone = Qwen3Config(
        hidden_size=256,
        num_hidden_layers=16,
        vocab_size=VOCAB,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=96,  # not heads x head_dim: ONNX int8 finds the down-projections by shape
        max_position_embeddings=512,
        pad_token_id=0,
        eos_token_id=1,
    )
    model = MLEmbedModel(MLEmbedConfig.from_backbone(backbone, **AXES)).eval()
    convert.save_folder(model, work / "elastic", tiny_tokenizer(VOCAB))
    folder = hub.export_hub(work / "elastic", work / "model")
    for repo_id in HUB_IDS:
        hub.install_into_cache(folder, repo_id)
    return folder


def main(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    work, results_path = Path(spec["work"]), Path(spec["results"])
    os.environ.setdefault("MPLBACKEND", "Agg")
    folder = build_fixture(work / "fixture")
    results: dict[str, dict] = {}
    for raw in spec["blocks"]:
        block = Block(**raw)
        page_dir = work / "pages" / block.page.replace("/", "_")
        if not page_dir.exists():
            page_dir.mkdir(parents=True)
            for name in FOLDERS:
                (page_dir / name).symlink_to(folder, target_is_directory=True)
        os.chdir(page_dir)
        start = time.perf_counter()
        try:
            output = run_python(block) if block.lang == "python" else run_shell(block.code, block.lang)
            results[block.id] = {"ok": True, "output": output[-4000:]}
        except BaseException:  # noqa: BLE001 - every failure of a block is its result
            results[block.id] = {"ok": False, "output": traceback.format_exc()[-6000:]}
        results[block.id]["seconds"] = round(time.perf_counter() - start, 2)
        results_path.write_text(json.dumps(results))


def spec_for(blocks: list[Block], work: Path) -> dict:
    return {"work": str(work), "results": str(work / "results.json"), "blocks": [asdict(b) for b in blocks]}


if __name__ == "__main__":
    main(Path(sys.argv[1]))
