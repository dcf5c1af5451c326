"""pytest plugin for CI: a run fails when a test is skipped for a reason that is not on the allow-list.

A skip hides a missing tool or package as quietly as a pass (a missing `dpkg-deb` once turned the mini end-to-end
test into a skip), so CI accepts only the skips it expects, each for a stated reason. `.ci/run` loads it with
`-p skip_policy --allowed-skips tests/allowed_skips.txt` (`.ci` on PYTHONPATH), for the development suite and for
every persona; a plain `pytest` run does not load it.

The allow-list: one regular expression a line, searched in the skip reason, then `#` and why the skip is fine;
blank lines and lines starting with `#` are comments.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest


def read_allow_list(path: str | Path) -> list[re.Pattern[str]]:
    patterns = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        pattern, _, why = line.partition(" #")
        if not pattern.strip() or line.lstrip().startswith("#"):
            continue
        if not why.strip():
            raise pytest.UsageError(f"{path}:{number}: say why the skip is allowed (`PATTERN  # why`)")
        patterns.append(re.compile(pattern.strip()))
    return patterns


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: reason")
        return str(longrepr[2])
    return str(longrepr)


class SkipPolicy:
    def __init__(self, patterns: list[re.Pattern[str]], source: str) -> None:
        self.patterns, self.source, self.unlisted = patterns, source, []

    def check(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            reason = skip_reason(report)
            if not any(pattern.search(reason) for pattern in self.patterns):
                self.unlisted.append(f"{report.nodeid}: {reason}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.check(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self.check(report)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.unlisted:
            terminalreporter.section(f"skips not allowed by {self.source}", sep="=", red=True, bold=True)
            for line in self.unlisted:
                terminalreporter.line(line)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.unlisted and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--allowed-skips", metavar="FILE", default=None, help="fail the run on a skip whose reason FILE does not list"
    )


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("allowed_skips")
    if path:
        config.pluginmanager.register(SkipPolicy(read_allow_list(path), path), "skip_policy_checker")
