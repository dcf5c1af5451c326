"""CI's skip policy (`.ci/skip_policy.py`): a skip whose reason is not on `tests/allowed_skips.txt` fails the run."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / ".ci"))
from skip_policy import read_allow_list  # noqa: E402

TESTS = """
import pytest

def test_passes():
    pass

def test_expected_skip():
    pytest.skip("needs the moon; set MOON=1")

def test_surprise_skip():
    pytest.skip("dpkg-deb builds the test .deb")

@pytest.mark.xfail(reason="known bug")
def test_known_bug():
    assert False
"""


def run(tmp_path, allow: str | None, tests: str = TESTS) -> subprocess.CompletedProcess:
    (tmp_path / "test_some.py").write_text(tests)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "skip_policy", "test_some.py"]
    if allow is not None:
        (tmp_path / "allowed.txt").write_text(allow)
        command += ["--allowed-skips", "allowed.txt"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / ".ci")}
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_skip_not_on_the_list_fails_the_run(tmp_path):
    proc = run(tmp_path, "needs the moon  # no moon in CI\n")
    assert proc.returncode == 1, proc.stdout
    assert "skips not allowed by allowed.txt" in proc.stdout
    assert "test_some.py::test_surprise_skip: Skipped: dpkg-deb builds the test .deb" in proc.stdout
    assert "test_expected_skip" not in proc.stdout.split("skips not allowed", 1)[1]  # listed; the xfail is no skip


def test_listed_skips_pass(tmp_path):
    proc = run(tmp_path, "# comment\n\nneeds the moon  # no moon in CI\ndpkg-deb builds  # no dpkg here\n")
    assert proc.returncode == 0, proc.stdout
    assert "1 passed, 2 skipped, 1 xfailed" in proc.stdout


def test_a_module_skipped_at_collection_counts_too(tmp_path):
    module = "import pytest\npytest.importorskip('no_such_mod')\n"
    proc = run(tmp_path, "needs the moon  # no moon in CI\n", tests=module)
    assert proc.returncode == 1 and "could not import 'no_such_mod'" in proc.stdout, proc.stdout


def test_failures_keep_their_exit_code(tmp_path):
    proc = run(tmp_path, "needs the moon  # why\n", tests=TESTS + "\ndef test_fails():\n    assert False\n")
    assert proc.returncode == 1 and "1 failed" in proc.stdout


def test_without_the_option_nothing_is_checked(tmp_path):
    assert run(tmp_path, None).returncode == 0


def test_every_allowed_skip_says_why(tmp_path):
    proc = run(tmp_path, "needs the moon\n")
    assert proc.returncode == 4 and "say why the skip is allowed" in proc.stderr
    assert read_allow_list(ROOT / "tests" / "allowed_skips.txt")  # the real list parses


def test_ci_runs_every_pytest_under_the_policy():
    script = (ROOT / ".ci" / "run").read_text().replace("\\\n", " ")  # continuation lines joined
    runs = [line for line in script.splitlines() if "-m pytest" in line and not line.lstrip().startswith("#")]
    assert len(runs) >= 3 and all('"${STRICT[@]}"' in line for line in runs), runs
