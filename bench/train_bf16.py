"""ml-embed-mini's training step on the CPU: fp32 against bf16 autocast (`training.bf16=true`), same recipe.

    python bench/train_bf16.py                     # the mini cache's data (run `mlembed mini` first); ~4 minutes
    python bench/train_bf16.py --steps 10 --rounds 1

The Trainer runs bf16 on the CPU as `torch.autocast("cpu", dtype=torch.bfloat16)`: matmuls in bf16, weights,
optimizer and the loss's similarities in fp32 (`mlembed.losses.objective` upcasts). Whether that is faster depends
on the processor: with native bf16 instructions (AVX512_BF16, AMX) oneDNN runs the matmuls in bf16, without them
it converts and is slower. The script prints the CPU's bf16 flags, then trains `--steps` steps of `mini.json` in
each precision, alternating `--rounds` times (fresh trainer each run, so the same steps and data), and reports
seconds per step and the ratio fp32 / bf16 measured in the same run. The quality of a bf16-trained model is a row
of the ablation grid (`python bench/ablation.py --only shared-bf16`). `mlembed mini` trains in bf16 by itself on a
CPU with those flags (`pipeline.precision_overrides`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache-dir", type=Path, default=None, help="the mini cache (default $MLEMBED_CACHE or ~/.cache)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from mlembed.mini import pipeline
    from mlembed.train.recipe import build_trainer

    paths = pipeline.MiniPaths((args.cache_dir or pipeline.default_cache_dir()).expanduser())
    if not any((paths.data / "train").glob("*.parquet")):
        sys.exit(f"no training data in {paths.data}: run `mlembed mini` (or pass --cache-dir)")
    flags = pipeline.native_bf16_flags() or "none"
    print(f"CPU bf16 flags: {flags}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    seconds: dict[str, list[float]] = {"fp32": [], "bf16": []}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.rounds):
            for precision in seconds:
                overrides = [
                    f"training.max_steps={args.steps}",
                    f"training.bf16={json.dumps(precision == 'bf16')}",
                    f"training.output_dir={json.dumps(out)}",
                    "training.logging_steps=1000",
                    "training.disable_tqdm=true",
                ]
                trainer = build_trainer(pipeline.load_recipe("mini.json", pipeline.minilm_path(), paths, overrides))
                start = time.perf_counter()
                trainer.train()
                seconds[precision].append((time.perf_counter() - start) / args.steps)
                print(f"  {precision}: {seconds[precision][-1]:.2f} s/step", flush=True)
    fp32, bf16 = (statistics.median(seconds[k]) for k in ("fp32", "bf16"))
    print(f"\nmedian s/step: fp32 {fp32:.2f}, bf16 {bf16:.2f}; fp32 / bf16 = {fp32 / bf16:.2f}x")


if __name__ == "__main__":
    main()
