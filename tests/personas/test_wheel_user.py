"""A wheel user's environment: `pip install ml_embed-*.whl` (not editable), no extras.

Run by `.ci/run` in a fresh virtual environment, from outside the repository, with `--noconftest`, after
`build_fixtures.py` wrote `$PERSONA_FIXTURES`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(os.environ["PERSONA_FIXTURES"])
MLEMBED = shutil.which("mlembed", path=str(Path(sys.executable).parent))  # this environment's console script


def mlembed(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([MLEMBED, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def test_installed_from_the_wheel_without_extras():
    import mlembed as package

    assert MLEMBED is not None, "the wheel installs the `mlembed` console script"
    assert "site-packages" in package.__file__, package.__file__  # not the checkout
    direct_url = importlib.metadata.distribution("ml-embed").read_text("direct_url.json") or "{}"
    assert not json.loads(direct_url).get("dir_info", {}).get("editable", False)
    for name in ("sentence_transformers", "datasets", "accelerate", "mteb", "deepspeed"):
        assert importlib.util.find_spec(name) is None, f"{name} is installed: not a bare wheel install"


def test_help_and_the_packaged_files():
    assert mlembed("--help").returncode == 0
    proc = mlembed("mini", "--help")
    assert proc.returncode == 0 and "--smoke" in proc.stdout, proc.stderr
    configs = importlib.resources.files("mlembed.mini") / "configs"
    assert {"mini.json", "mini-exits.json", "mini-plain.json"} <= {p.name for p in configs.iterdir()}
    assert (importlib.resources.files("mlembed.export") / "templates" / "card.md").is_file()


def test_convert_encode_export(tmp_path):
    proc = mlembed("convert", str(FIXTURES / "base"), str(tmp_path / "ml"), "--mel-rank", "32")
    assert proc.returncode == 0, proc.stderr
    proc = mlembed("encode", str(tmp_path / "ml"), "short", "--layers", "1", "--dim", "8", "--rank", "8")
    assert proc.returncode == 0, proc.stderr
    expected = json.loads((FIXTURES / "expected.json").read_text())
    row = next(s for s in expected["settings"] if (s["layers"], s["dim"], s["rank"], s["prompt"]) == (1, 8, 8, None))
    np.testing.assert_allclose(np.array(json.loads(proc.stdout))[0], row["embeddings"][1], atol=1e-5)
    for mode, extra in (("slim", ["--layers", "1", "--rank", "8"]), ("compat", []), ("hub", [])):
        proc = mlembed("export", str(tmp_path / "ml"), str(tmp_path / mode), "--mode", mode, *extra)
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / mode / "config.json").is_file()


@pytest.mark.parametrize(
    "argv, extra",
    [
        (["export", "{ml}", "{tmp}/onnx", "--mode", "onnx"], "serve"),
        (["encode", "--onnx", "{tmp}/onnx", "text"], "serve"),
        (["train", "--config", "{tmp}/recipe.json"], "train"),
        (["eval", "{ml}", "--data", "{tmp}/pairs.jsonl", "--no-plot"], "eval"),
        (["mini", "--smoke"], "mini"),
        (["encode-corpus", "{ml}", "{tmp}/pairs.jsonl", "{tmp}/corpus"], "corpus"),
        (["search", "{tmp}/db", "a query"], "corpus"),
    ],
)
def test_a_command_needing_an_extra_says_which_in_one_line(tmp_path, argv, extra):
    ml = tmp_path / "ml"
    assert mlembed("convert", str(FIXTURES / "base"), str(ml)).returncode == 0
    (tmp_path / "recipe.json").write_text(json.dumps({"model": {"base": str(ml)}, "training": {"output_dir": "o"}}))
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"query": "q", "passage": "p"}) + "\n")
    proc = mlembed(*[a.format(ml=ml, tmp=tmp_path) for a in argv], cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].endswith(f'needs the "{extra}" extra: pip install "ml-embed[{extra}]"'), proc.stderr[-2000:]
    assert not any(line.startswith("Traceback") for line in lines)
