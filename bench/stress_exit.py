"""Run the two-process tiny recipe many times per strategy and count the runs that do not exit 0.

    python bench/stress_exit.py                                   # zero3 and zero2, 30 runs each
    python bench/stress_exit.py --runs 10 --strategies ddp fsdp nodes st-loss

Why: a finished run could still abort at interpreter exit ("terminate called without an active exception",
SIGABRT, exit -6) now and then, which a single test run does not show: a gloo worker thread still alive while the
interpreter finalizes (see `mlembed.distributed.close`). Each strategy is a CPU (gloo) launch of the tests:
`torchrun ... -m mlembed.cli train` on the recipe of tests/test_train.py (`make_workdir`) with the overrides of its
`train_cli` (`ddp`, `fsdp`, `zero2`, `zero3`; `nodes` is two one-process torchrun "nodes", as
`test_two_nodes_equal_one_process`), and `st-loss` is the sentence-transformers script of tests/test_st_loss.py.
Printed per strategy: the non-zero exits, the exit codes torchrun reported per failed rank (negative = killed by
that signal) and how many logs show the abort message. `--cores` keeps a core dump of an aborting process in its
run folder (for gdb); a failed run's folder is always kept.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

CHOICES = ["ddp", "fsdp", "zero2", "zero3", "nodes", "st-loss"]
ABORT = "terminate called without an active exception"
LEFTOVER = "gloo threads outlive the process groups"  # distributed.close's warning: the abort stays possible
EXTRA = {  # what the tests add per strategy (tests/test_train.py)
    "fsdp": ["training.fsdp=true"],
    "zero2": [f"training.deepspeed={ROOT / 'configs' / 'deepspeed' / 'zero2.json'}", "training.save_steps=3"],
    "zero3": [f"training.deepspeed={ROOT / 'configs' / 'deepspeed' / 'zero3.json'}", "training.save_steps=3"],
}


def prepare(folder: Path) -> None:
    """The tests' tiny recipe (`make_workdir` of tests/test_train.py) and, for `st-loss`, the tiny Hub folder and
    the script of tests/test_st_loss.py."""
    from conftest import tiny_model
    from test_st_loss import DDP_SCRIPT
    from test_train import make_workdir

    from mlembed.export import convert, hub

    if (folder / "tiny.json").exists():  # prepared before (--folder)
        return
    make_workdir(folder)
    model = tiny_model("qwen3", mel_rank=32, mel_ranks=[8, 16, 32])
    convert.save_folder(model, folder / "st-ml", model.tokenizer)
    hub.export_hub(folder / "st-ml", folder / "st-hub")
    (folder / "ddp_st.py").write_text(DDP_SCRIPT)


def commands(strategy: str, folder: Path, out: Path) -> list[list[str]]:
    """One command per launcher (two for `nodes`), run with cwd `out`; the overrides of the tests' `train_cli`."""
    from conftest import free_port

    port = str(free_port())
    run = [sys.executable, "-m", "torch.distributed.run", "--master_addr", "127.0.0.1", "--master_port", port]
    if strategy == "st-loss":
        return [[*run, "--nproc_per_node", "2", str(folder / "ddp_st.py"), str(folder / "st-hub"), str(out)]]
    train = ["-m", "mlembed.cli", "train", "--config", str(folder / "tiny.json")]
    train += ["--set", f"training.output_dir={out}", "training.max_steps=3", "export.hub=false"]
    train += ["training.per_device_train_batch_size=4", "training.ddp_backend=gloo", *EXTRA.get(strategy, [])]
    if strategy == "nodes":
        per_node = ["--nnodes", "2", "--nproc_per_node", "1"]
        return [[*run, *per_node, "--node_rank", str(node), *train] for node in (0, 1)]
    return [[*run, "--nproc_per_node", "2", *train]]


def once(strategy: str, folder: Path, out: Path, cores: bool) -> tuple[int, list[int], bool, bool]:
    """Launch one run: (worst launcher exit code, the exit codes torchrun reported for failed ranks, abort message
    seen, leftover gloo threads reported)."""
    out.mkdir(parents=True)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}

    def limits() -> None:
        if cores:
            resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    procs, logs = [], []
    for i, command in enumerate(commands(strategy, folder, out)):
        logs.append(out / f"launcher{i}.log")
        with logs[-1].open("w") as log:
            procs.append(
                subprocess.Popen(command, cwd=out, env=env, stdout=log, stderr=log, preexec_fn=limits)  # noqa: PLW1509
            )
    codes = [proc.wait(timeout=900) for proc in procs]
    text = "\n".join(log.read_text(errors="replace") for log in logs)
    ranks = [int(c) for c in re.findall(r"exitcode\s*:\s*(-?\d+)", text)]
    worst = next((c for c in codes if c != 0), 0)
    return worst, ranks, ABORT in text, LEFTOVER in text


def signal_name(code: int) -> str:
    return f"{code} ({signal.Signals(-code).name})" if code < 0 and -code in signal.valid_signals() else str(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="runs per strategy")
    parser.add_argument("--strategies", nargs="+", default=["zero3", "zero2"], choices=CHOICES)
    parser.add_argument("--folder", default=None, help="work folder (default: a fresh temporary one)")
    parser.add_argument("--cores", action="store_true", help="allow core dumps (in the failed run's folder)")
    parser.add_argument("--keep", action="store_true", help="keep every run's folder (default: failed runs only)")
    args = parser.parse_args()
    if any(s.startswith("zero") for s in args.strategies):
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise SystemExit("deepspeed is not installed")
    folder = Path(args.folder or tempfile.mkdtemp(prefix="mlembed-stress-exit-"))
    folder.mkdir(parents=True, exist_ok=True)
    prepare(folder)
    print(f"{args.runs} runs per strategy, work folder {folder}", flush=True)
    totals = {}
    for strategy in args.strategies:
        failed, rank_codes, aborts, leftovers, start = 0, Counter(), 0, 0, time.perf_counter()
        for i in range(args.runs):
            out = folder / f"{strategy}-{i:03d}"
            code, ranks, abort, leftover = once(strategy, folder, out, args.cores)
            failed += code != 0
            aborts += abort
            leftovers += leftover
            rank_codes.update(ranks)
            if code != 0:
                print(f"  {strategy} run {i}: exit {code}, ranks {ranks}, abort message: {abort}, log in {out}")
            elif not args.keep:
                shutil.rmtree(out, ignore_errors=True)
        seen = ", ".join(f"{signal_name(c)} x{n}" for c, n in sorted(rank_codes.items())) or "-"
        totals[strategy] = failed
        print(
            f"{strategy:8} {failed:3d} of {args.runs} runs exited non-zero; rank exit codes seen: {seen}; "
            f"abort message in {aborts} logs, leftover gloo threads in {leftovers} "
            f"({(time.perf_counter() - start) / args.runs:.1f} s per run)",
            flush=True,
        )
    print(f"total: {sum(totals.values())} of {args.runs * len(args.strategies)} runs exited non-zero")
    if any(totals.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
