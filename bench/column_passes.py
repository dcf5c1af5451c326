"""A training step of ml-embed-mini's two stages with queries and passages embedded in a pass each, at their own
widths (`side_batches`, what the objective does), against one pass over the flat batch padded to the passages'
width (what it did before).

    python bench/column_passes.py                     # the mini cache of `mlembed mini` (MLEMBED_CACHE)
    python bench/column_passes.py --cache-dir DIR --batches 4 --rounds 6 --threads 2

Both cases run the shipped recipes as `mlembed mini` builds them (`load_recipe` + `build_trainer`: MiniLM, MEL rank
384, batches of 32 Debian pairs at 64 tokens at most, training mode): stage 1 (`mini.json`, the whole body) and
stage 2 (`mini-exits.json`, the layers=3 LoRA module on a frozen body; built on the converted stock model here, which
has the body's shapes). One step = `compute_loss`, backward, AdamW step, on the same `--batches` batches of the
trainer's own data loader. The cases alternate step by step after a warm-up (A B A B ...); the median and the
minimum s/step of each are printed with the ratio by side / one pass, next to the ratio of the tokens each runs
(padding included). Needs the mini cache's data and stock folders (`mlembed mini --until convert` builds them).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the remote-code modules, also from a plain checkout

from _util import busy_warning, median_times, print_table  # noqa: E402

import mlembed.losses.objective as objective_module  # noqa: E402
from mlembed.losses.columns import side_batches  # noqa: E402

STAGES = {"stage 1 (body)": "mini.json", "stage 2 (exit module)": "mini-exits.json"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache-dir", type=Path, default=None, help="the mini cache (default $MLEMBED_CACHE or ~/.cache)")
    p.add_argument("--batches", type=int, default=4, help="distinct batches each case cycles through")
    p.add_argument("--rounds", type=int, default=6, help="timed steps per case")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def one_pass(batch, num_columns):
    """The objective's passes before `side_batches`: the whole flat batch in one."""
    return [dict(batch)]


@contextlib.contextmanager
def embedding(fn) -> Iterator[None]:
    """The step's passes swapped for the duration (the objective reads `side_batches` at call time)."""
    before = objective_module.side_batches
    objective_module.side_batches = fn
    try:
        yield
    finally:
        objective_module.side_batches = before


def padded_tokens(batch: dict, passes) -> int:
    """Tokens (padding included) the model runs on for one batch, split into passes by `passes`."""
    tokens = {k: batch[k] for k in ("input_ids", "attention_mask")}
    return sum(p["input_ids"].numel() for p in passes(tokens, batch["num_columns"]))


def stage_cases(recipe: str, paths, output_dir: str, batches: int) -> tuple[dict, list[dict]]:
    from mlembed.mini.pipeline import load_recipe, minilm_path
    from mlembed.train.recipe import build_trainer

    base = minilm_path() if recipe == "mini.json" else str(paths.stock)
    trainer = build_trainer(load_recipe(recipe, base, paths, [f"training.output_dir={output_dir}"]))
    model = trainer.model.train()
    data = list(itertools.islice(trainer.get_train_dataloader(), batches))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def stepper(fn):
        cycle = itertools.cycle(data)

        def step() -> None:
            with embedding(fn):
                trainer.compute_loss(model, next(cycle)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step

    return {"one pass": stepper(one_pass), "by side": stepper(side_batches)}, data


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from mlembed.mini.pipeline import MiniPaths, default_cache_dir

    paths = MiniPaths(args.cache_dir or default_cache_dir())
    if not (paths.data / "train").is_dir() or not paths.stock.is_dir():
        sys.exit(f"{paths.root} lacks the mini data or stock folder: run `mlembed mini --until convert` first")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, recipe in STAGES.items():
            fns, data = stage_cases(recipe, paths, tmp, args.batches)
            t = median_times(fns, repeats=args.rounds, warmup=1)
            busy_warning(t)
            splits = {"one pass": one_pass, "by side": side_batches}
            tokens = {case: sum(padded_tokens(b, splits[case]) for b in data) for case in fns}
            rows.append(
                [
                    name,
                    f"{t['one pass'][0]:.2f} / {t['one pass'][1]:.2f}",
                    f"{t['by side'][0]:.2f} / {t['by side'][1]:.2f}",
                    f"{t['by side'][0] / t['one pass'][0]:.2f}x / {t['by side'][1] / t['one pass'][1]:.2f}x",
                    f"{tokens['by side'] / tokens['one pass']:.2f}x",
                ]
            )
    print(
        f"\nml-embed-mini training steps, {args.rounds} interleaved rounds over {args.batches} batches, "
        f"{args.threads} threads (s/step: median / min)"
    )
    print_table(
        ["stage", "one pass s/step", "by side s/step", "by side / one pass", "tokens by side / one pass"], rows
    )


if __name__ == "__main__":
    main()
