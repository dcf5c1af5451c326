"""Shared helpers of the benchmark scripts: interleaved timing and peak-memory probes in fresh subprocesses.

Timing: the cases alternate round by round (A B C A B C ...) after a warm-up, and each reports its median, so slow
drift of the machine (frequency, other load) hits every case alike and the ratios stay honest.

Memory on the CPU: torch has no allocator statistics for the CPU and `tracemalloc` does not see its buffers, so a
case runs in a fresh Python process that reports the operating system's view. After the setup (weights, inputs)
the kernel's high-water mark is reset (`/proc/self/clear_refs` = 5, Linux >= 4.0) and the step's peak is read back
from `VmHWM`; the number reported is that peak minus the resident size just before the step, i.e. the extra memory
the step needed on top of what was already live. Torch's CPU allocator does not cache, so this is the true peak of
live buffers up to page granularity (the child runs with a fixed 64 KiB mmap threshold so that freed blocks leave
the resident set at once). Where the reset is refused, `ru_maxrss` (lifetime peak) is used and flagged.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

MiB = 2**20


def median_times(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> dict[str, tuple[float, float, float]]:
    """Seconds per call of every case as (median, min, max); cases interleave round by round."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(t), min(t), max(t)) for name, t in times.items()}


def ratios(t: dict[str, tuple[float, float, float]], num: str, den: str) -> tuple[float, float]:
    """Time ratio num / den by medians and by minima (the minimum is the least disturbed run on a shared box)."""
    return t[num][0] / t[den][0], t[num][1] / t[den][1]


def busy_warning(t: dict[str, tuple[float, float, float]], spread: float = 1.5) -> None:
    """Say so when some case's slowest round took `spread` times its fastest: other load was on the machine."""
    noisy = [name for name, (_, low, high) in t.items() if high > spread * low]
    if noisy:
        print(f"  note: busy machine (max > {spread}x min for {len(noisy)} of {len(t)} cases); trust the min ratios")


def fmt_ms(stats: tuple[float, float, float]) -> str:
    med, lo, hi = stats
    return f"{med * 1e3:9.1f} ms  [{lo * 1e3:.1f}-{hi * 1e3:.1f}]"


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def step_peak_bytes(step: Callable[[], Any]) -> dict[str, Any]:
    """Run `step` once; its peak resident memory above the resident size just before it (see module docstring)."""
    import resource

    before = _status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        method = "VmHWM after clear_refs"
    except OSError:
        method = "ru_maxrss (lifetime peak: may include setup)"
    step()
    if method.startswith("VmHWM"):
        peak = _status_kib("VmHWM")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"extra_bytes": (peak - before) * 1024, "before_bytes": before * 1024, "method": method}


def probe_in_subprocess(script: str, case: str, extra_args: list[str]) -> dict[str, Any]:
    """Run `script --child CASE ...` in a fresh interpreter; it prints one JSON line (its last line of output)."""
    # Every allocation of 64 KiB or more gets its own mapping, returned to the system when freed: otherwise glibc
    # keeps freed blocks resident and the next step reuses them unseen (the resident size would under-count).
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    env["GLIBC_TUNABLES"] = "glibc.malloc.mmap_threshold=65536:glibc.malloc.trim_threshold=0"
    proc = subprocess.run(
        [sys.executable, script, "--child", case, *extra_args], capture_output=True, text=True, check=False, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe {case!r} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """A markdown table (pastes into the README as is)."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    print(line(headers))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))
