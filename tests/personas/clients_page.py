"""The snippets of docs/clients.md, run as a user would: in a folder holding the page's model folders.

Shared by the persona tests that run them (`test_rag_user.py`, `test_transformers4_user.py`); standard library only.
"""

from __future__ import annotations

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "clients.md"
FOLDERS = ("ml-embed-mini", "ml-embed-mini-3-64")  # the page's Hub folder and its cut setting


def snippets(page: Path = PAGE) -> dict[str, str]:
    """The python block of each `## Section` of the page (the first one, when a section has several)."""
    found: dict[str, str] = {}
    for section in re.split(r"^## ", page.read_text(encoding="utf-8"), flags=re.M)[1:]:
        title = section.splitlines()[0].strip()
        block = re.search(r"^```python\n(.*?)^```", section, flags=re.M | re.S)
        if block:
            found.setdefault(title, block.group(1))
    return found


def run_snippet(code: str, folder: str, fixtures: Path, cwd: Path, monkeypatch) -> dict:
    """Execute a snippet in `cwd` (links to the fixture folders) with `folder` in place of the page's
    `ml-embed-mini`, as the page says a cut setting is used; returns the snippet's variables."""
    for name in FOLDERS:
        if not (cwd / name).exists():
            (cwd / name).symlink_to(fixtures / name, target_is_directory=True)
    monkeypatch.chdir(cwd)
    namespace: dict = {"__name__": "__snippet__"}
    source = re.sub(r'"ml-embed-mini(?=[/"])', f'"{folder}', code)
    exec(compile(source, f"docs/clients.md ({folder})", "exec"), namespace)
    return namespace
