"""The README and docs/ as a newcomer meets them: every code block runs, the front page stays short and current.

Each ```python / ```bash / ```sh / ```console block of README.md and docs/*.md is one test (id `page:line`), run
on a tiny random model standing in for the Hub ids and folders the pages name (`tests/docs_blocks.py`), so a
renamed flag or function fails here. A block marked `<!-- docs-test: skip (reason) -->` is not run; the marked
blocks and their reasons are listed at the end of the run (and must give a reason).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DOCS_NOT_RUN
from docs_blocks import PAGES, ROOT, RUNNABLE, all_blocks, spec_for

BLOCKS = all_blocks()
RUN = [block for block in BLOCKS if block.lang in RUNNABLE and block.skip is None]
MARKED = [block for block in BLOCKS if block.skip is not None]
README = ROOT / "README.md"
HISTORY = re.compile(r"\bsessions?\b|\bissue\s*#?\s*\d|\bprevious(ly)?\b", re.IGNORECASE)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Runs every runnable block once, in one fresh process with a private, offline Hugging Face cache."""
    work = tmp_path_factory.mktemp("docs")
    spec = work / "spec.json"
    spec.write_text(json.dumps(spec_for(RUN, work)))
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "HF_HOME": str(work / "hf"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "docs_blocks.py"), str(spec)],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=900,
    )
    found = work / "results.json"
    ran = json.loads(found.read_text()) if found.exists() else {}
    if proc.returncode and len(ran) < len(RUN):
        ran["runner"] = {"ok": False, "output": proc.stderr[-6000:]}
    return ran


@pytest.mark.parametrize("block", RUN, ids=[block.id for block in RUN])
def test_block_runs(block, results):
    result = results.get(block.id)
    assert result is not None, f"the runner stopped before {block.id}:\n{results.get('runner', {}).get('output')}"
    assert result["ok"], f"{block.id} ({block.lang}) failed:\n{block.code}\n{result['output']}"


def test_marked_blocks_say_why(request):
    """Every block that is not run says why; the list is printed at the end of the run."""
    assert MARKED, "no block is marked; is the marker still read?"
    request.config.stash[DOCS_NOT_RUN] = [f"{block.id} ({block.lang}): {block.skip}" for block in MARKED]
    assert [block.id for block in MARKED if not block.skip] == []


def test_every_runnable_language_is_run_or_marked():
    """A block in a language the runner does not know is output, not a command: it uses ```text."""
    unknown = {b.lang for b in BLOCKS} - RUNNABLE - {"text", "json", "yaml", "toml", "ini", "diff", "markdown"}
    assert unknown == set()
    assert [b.id for b in BLOCKS if not b.lang] == [], "give every fenced block a language (```text for output)"


def test_readme_starts_with_the_two_setup_commands():
    runnable = [block for block in all_blocks() if block.page == "README.md"][:2]
    assert [block.code for block in runnable] == ["bash quickstart.sh\n", "bash .ci/run\n"]
    assert [block.lang for block in runnable] == ["bash", "bash"]
    before = README.read_text(encoding="utf-8").splitlines()[: runnable[0].line]
    assert sum(line.startswith("#") for line in before) == 1, "only the title comes before the two commands"


def test_readme_is_a_front_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    assert HISTORY.findall(text) == [], "the README describes the project, not its history"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / target.split("#")[0]).resolve() for target in LINK.findall(README.read_text())}
    assert [page.name for page in PAGES[1:] if page.resolve() not in linked] == []


@pytest.mark.parametrize("page", PAGES, ids=[page.relative_to(ROOT).as_posix() for page in PAGES])
def test_relative_links_exist(page):
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        if not (page.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert broken == []
