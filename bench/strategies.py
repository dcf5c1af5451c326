"""The tiny recipe under each distributed strategy: same weights as one process, and proof that state is sharded.

    python bench/strategies.py                                  # CPU: gloo, 2 processes; ddp fsdp (+ zero2 zero3)
    python bench/strategies.py --device cuda --nproc 1 --hidden 512   # one GPU: NCCL, bf16 off, every strategy

Each strategy trains the same tiny Qwen3 recipe (synthetic retrieval data, MEL + MLL + MRL, AdamW) through
`mlembed train`'s own code (`build_trainer`), launched with `torchrun`, batch `8 / nproc` per process. Reported:
* max |w - w_ref| of the final weights against one process on the whole batch (the same maths: in-batch negatives
  are gathered across processes, gradients averaged);
* the optimizer-state elements held by rank 0 (`DDP` keeps all of them on every rank; ZeRO-2/3 and FSDP split them
  `nproc` ways), and for ZeRO-3 / FSDP the parameter elements rank 0 holds between steps;
* that the saved `final/` folder loads with `AutoModel.from_pretrained(..., trust_remote_code=True)` and encodes;
* seconds per step and, on CUDA, peak memory per process, as ratios against DDP measured in the same run.
DeepSpeed strategies are skipped (and said so) where `deepspeed` is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STRATEGIES = {
    "ddp": [],
    "fsdp": ["training.fsdp=true"],  # FSDP2, full shard, the backbone's layers wrapped (its _no_split_modules)
    "zero2": [f"training.deepspeed={ROOT / 'configs' / 'deepspeed' / 'zero2.json'}"],
    "zero3": [f"training.deepspeed={ROOT / 'configs' / 'deepspeed' / 'zero3.json'}"],
}


def make_recipe(folder: Path, hidden: int, layers: int, steps: int, device: str) -> Path:
    """A tiny random Qwen3 backbone + character tokenizer + synthetic parquet data + recipe config."""
    import torch
    from transformers import AutoModel

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import backbone_config, synthetic_retrieval, tiny_tokenizer

    torch.manual_seed(0)
    heads = max(4, hidden // 64)
    backbone = backbone_config(
        "qwen3",
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2,
        head_dim=hidden // heads,
        intermediate_size=2 * hidden,
    )
    AutoModel.from_config(backbone).save_pretrained(folder / "base")
    tiny_tokenizer().save_pretrained(folder / "base")
    (folder / "data").mkdir(exist_ok=True)
    synthetic_retrieval(96, 0).to_parquet(folder / "data" / "words_retrieval.parquet")
    exits = sorted({1, 2, layers} | {2**i for i in range(layers.bit_length()) if 2**i <= layers})
    config = {
        "model": {"base": str(folder / "base"), "mel_rank": min(64, hidden), "exit_layers": exits},
        "data": {"train": ["data/*.parquet"], "max_length": 32},
        "training": {
            "max_steps": steps,
            "learning_rate": 1e-3,
            "logging_steps": 1,
            "save_strategy": "no",
            "report_to": "none",
            "use_cpu": device == "cpu",
            "seed": 0,
            "output_dir": "out",
        },
        "export": {"hub": False},
    }
    (folder / "tiny.json").write_text(json.dumps(config))
    return folder / "tiny.json"


def worker(args: argparse.Namespace) -> None:
    """One process of one strategy: train, report rank 0's state sizes and timings, save `final/`."""
    from mlembed import distributed

    _train_and_report(args)  # its trainer is gone on return: the process groups can be freed
    distributed.close()


def _train_and_report(args: argparse.Namespace) -> None:
    import torch
    from transformers import TrainerCallback

    from mlembed.train.config import load_config
    from mlembed.train.recipe import build_trainer, release

    config = load_config(args.config, args.set)
    trainer = build_trainer(config)
    report: dict = {"strategy": args.strategy}

    class Probe(TrainerCallback):
        def on_step_begin(self, targs, state, control, **kwargs):
            if state.global_step == 1:  # after the first (warm-up) step
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                report["t1"] = time.perf_counter()

        def on_step_end(self, targs, state, control, **kwargs):
            if state.global_step == 1:
                report["optimizer_elements"] = _optimizer_elements(trainer.optimizer)
                report["param_elements"] = _local_param_elements(trainer.model_wrapped)
                report["full_param_elements"] = sum(p.numel() for p in trainer.model.parameters())

    trainer.add_callback(Probe())
    trainer.train()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        report["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    report["sec_per_step"] = (time.perf_counter() - report["t1"]) / (trainer.state.global_step - 1)
    report["losses"] = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    report["wrapper"] = type(trainer.model_wrapped).__name__
    trainer.save_model(str(Path(trainer.args.output_dir) / "final"))
    if trainer.is_world_process_zero():
        Path(args.report).write_text(json.dumps(report))
    release(trainer)


def _optimizer_elements(optimizer) -> int:
    """Elements of the optimizer state tensors this process holds (DeepSpeed and accelerate wrappers included)."""
    inner = optimizer
    while hasattr(inner, "optimizer") and inner.optimizer is not inner:
        inner = inner.optimizer
    return sum(v.numel() for s in inner.state.values() for v in s.values() if hasattr(v, "numel") and v.dim() > 0)


def _local_param_elements(model) -> int:
    """Parameter elements this process holds now (ZeRO-3: `ds_tensor`; FSDP2: the local shard of the DTensor)."""
    total = 0
    for p in model.parameters():
        if hasattr(p, "ds_tensor"):
            total += p.ds_tensor.numel()
        elif hasattr(p, "to_local"):
            total += p.to_local().numel()
        else:
            total += p.numel()
    return total


def run_strategy(name: str, config: Path, nproc: int, extra: list[str]) -> dict | None:
    """Launch one strategy (`reference`: one plain process) and return rank 0's report, `None` if it failed."""
    from conftest import free_port

    folder = config.parent
    report = folder / f"{name}.json"
    overrides = [
        f"training.output_dir={folder / name}",
        f"training.per_device_train_batch_size={8 // nproc}",
        *STRATEGIES.get(name, []),
        *extra,
    ]
    if nproc == 1 and name == "reference":
        launcher = [sys.executable]
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
        launcher += ["--master_port", str(free_port())]
    command = [*launcher, __file__, "--worker", "--strategy", name, "--config", str(config), "--report", str(report)]
    command += ["--set", *overrides]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"{name}: FAILED ({time.perf_counter() - start:.0f} s)\n{proc.stderr[-4000:]}")
        return None
    return json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--nproc", type=int, default=2, choices=[1, 2, 4, 8])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--extra", nargs="*", default=[], help="overrides for every run, e.g. training.bf16=true")
    parser.add_argument("--folder", default=None, help="work folder (default: a fresh temporary one)")
    parser.add_argument("--json", default=None, help="also write the results here")
    # worker mode (launched by torchrun)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    parser.add_argument("--set", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    import importlib.util
    import tempfile

    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel

    folder = Path(args.folder or tempfile.mkdtemp(prefix="mlembed-strategies-"))
    folder.mkdir(parents=True, exist_ok=True)
    config = make_recipe(folder, args.hidden, args.layers, args.steps, args.device)
    extra = (["training.ddp_backend=gloo"] if args.device == "cpu" else []) + args.extra
    print(f"torch {torch.__version__}, {args.device}, {args.nproc} processes, {args.extra}, work folder {folder}")
    reference = run_strategy("reference", config, 1, args.extra)
    if reference is None:
        raise SystemExit("the one-process reference failed")
    ref_weights = load_file(folder / "reference" / "final" / "model.safetensors")
    results = {"reference": reference}
    for name in args.strategies:
        if name.startswith("zero") and importlib.util.find_spec("deepspeed") is None:
            print(f"{name}: skipped (deepspeed is not installed)")
            continue
        report = run_strategy(name, config, args.nproc, extra)
        if report is None:
            results[name] = {"failed": True}
            continue
        final = folder / name / "final"
        weights = load_file(final / "model.safetensors")
        report["same_keys"] = weights.keys() == ref_weights.keys()
        report["max_abs_diff"] = max(
            (weights[k].float() - ref_weights[k].float()).abs().max().item() for k in ref_weights if k in weights
        )
        model = AutoModel.from_pretrained(final, trust_remote_code=True)
        report["loads_and_encodes"] = tuple(model.encode(["cat dog"], layers=2, dim=16).shape) == (1, 16)
        results[name] = report
    base = results.get("ddp", {})
    print(
        f"\n{'strategy':10} {'wrapper':28} {'max|dw|':>9} {'opt elems':>10} {'param elems':>12} "
        f"{'s/step':>8} {'x ddp':>6} {'peak MiB':>9} loads"
    )
    for name, r in results.items():
        if r.get("failed"):
            print(f"{name:10} FAILED")
            continue
        ratio = r["sec_per_step"] / base["sec_per_step"] if base.get("sec_per_step") else float("nan")
        print(
            f"{name:10} {r['wrapper']:28} {r.get('max_abs_diff', 0.0):9.2e} {r['optimizer_elements']:10d} "
            f"{r['param_elements']:12d} {r['sec_per_step']:8.3f} {ratio:6.2f} {r.get('peak_mib', float('nan')):9.1f} "
            f"{r.get('loads_and_encodes', '')}{'' if r.get('same_keys', True) else ' (KEYS DIFFER)'}"
        )
    print(
        f"(full model: {reference['full_param_elements']} parameter elements; losses of the reference: "
        f"{[round(x, 3) for x in reference['losses']]})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if any(r.get("failed") for r in results.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
