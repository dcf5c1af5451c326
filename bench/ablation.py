"""The ablation grid of ml-embed-mini: which axis costs the full-size quality, and what each recipe change buys.

    python bench/ablation.py                       # every variant not trained yet, then the tables
    python bench/ablation.py --only plain,3d       # a subset; --redo NAME retrains one; --threads 1 on a busy box

Every variant trains MiniLM (all-MiniLM-L6-v2) on the same Debian pairs, for the same 200 steps (`GRID_STEPS`;
rows named "300 steps" / "400 steps" excepted), with the same seed and schedule as `mlembed mini` (its recipe
`mlembed/mini/configs/mini-plain.json`, changed only by the overrides listed in `VARIANTS`), and is scored on both
held-out sets of the pipeline (the in-domain Debian split and the out-of-domain program messages) at full,
layers=3, dim=96, rank=64 and all three together (nDCG@10, MRR@10, per language). Rows: stock MiniLM (no
training), plain fine-tuning, each axis alone, all three (the paper's recipe) plus each change tried, the shared
recipe as ml-embed-mini shipped it until the two-stage one (`shared`), the dedicated models (the anchors), the
two-stage recipes, and the shipped default as is (`default-body` = `mini.json`, then `default` = `mini-exits.json`).
`NAME@STEPS` (or `--steps`) is a row at another training budget: a learning curve.

Everything is cached in the mini cache (`--cache-dir`, default `$MLEMBED_CACHE` or `~/.cache/mlembed/mini`):
the data and the stock model of the pipeline, one folder per variant under `ablation/<name>` (model, training
summary, `eval.json`), so a rerun only trains and scores what is missing or stale: a row whose recipe changed
since it trained (the fingerprint in its `summary.json`, as `mlembed mini` checks its stages) trains again.
Outputs (`-o`, default `<cache>/ablation`): `table.md` (the grid on both sets, the goal ratios, nDCG@10 per
language) and `results.json`.

Runtime on 2 CPU cores: about 6 minutes of training per variant alone on the machine (200 steps of 32 pairs) plus
about 2 minutes of scoring; the 20 rows take about 2.5 hours on a quiet machine, much longer on a shared one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

UNIFORM_DIMS = '{"384": 1, "192": 1, "96": 1, "48": 1, "24": 1}'  # MRL's own weighting (Kusupati et al. 2022)
ONLY_96 = '{"384": 0, "192": 0, "96": 1, "48": 0, "24": 0}'  # a loss on the first 96 dims alone
AXES_ON = ("model.mel_rank=128", "loss.mel=true", "loss.mll=true", "loss.mrl=true")  # the paper's 3D-ML
# The paper's shared recipe as ml-embed-mini shipped it until the two-stage recipe (`shared`): 3D-ML with full-rank MEL
# and the full exit weighted 3x, 300 steps.
SHARED = (*AXES_ON, "model.mel_rank=384", 'loss.exit_weights={"6": 3.0}')
GRID_STEPS = "training.max_steps=200"  # every row with grid_steps (all but the shipped default), unless overridden


@dataclass(frozen=True)
class Variant:
    """One row: a shipped mini recipe changed by `overrides` (`section.key=value`); `config=None` = no training;
    `init`: the variant whose trained model this one starts from (instead of stock MiniLM); `{stock}` in an override
    stands for the stock model's folder."""

    name: str
    label: str
    config: str | None
    overrides: tuple[str, ...] = ()
    init: str | None = None
    grid_steps: bool = True  # train `GRID_STEPS` (False: the recipe's own steps, as shipped)
    first_layers: int | None = None  # train the first N layers of stock MiniLM as an N-layer model (a dedicated row)


VARIANTS = (
    Variant("stock", "all-MiniLM-L6-v2 (stock, no training)", None),
    Variant("plain", "plain fine-tuning", "mini-plain.json"),
    Variant("mel", "MEL only (rank 128)", "mini-plain.json", ("model.mel_rank=128", "loss.mel=true")),
    Variant("mll", "MLL only (exits 2/3/4/6)", "mini-plain.json", ("loss.mll=true",)),
    Variant("mrl", "MRL only (dims 24..384)", "mini-plain.json", ("loss.mrl=true",)),
    Variant("3d", "all three (the paper's recipe; previous default)", "mini-plain.json", AXES_ON),
    Variant(
        "3d-rank384",
        "all three + MEL rank 384 (full rank at full size)",
        "mini-plain.json",
        (*AXES_ON, "model.mel_rank=384"),
    ),
    Variant(
        "3d-selfkd", "all three + self-distillation (weight 1)", "mini-plain.json", (*AXES_ON, "loss.self_distill=1.0")
    ),
    Variant(
        "3d-exitw", "all three + full exit weighted 3x", "mini-plain.json", (*AXES_ON, 'loss.exit_weights={"6": 3.0}')
    ),
    Variant(
        "3d-dimsu",
        "all three + uniform MRL weights",
        "mini-plain.json",
        (*AXES_ON, f"loss.dim_weights={UNIFORM_DIMS}"),
    ),
    Variant(
        "3d-tuned",
        "all three + rank 384 + full exit 3x + uniform MRL weights",
        "mini-plain.json",
        (*AXES_ON, "model.mel_rank=384", 'loss.exit_weights={"6": 3.0}', f"loss.dim_weights={UNIFORM_DIMS}"),
    ),
    Variant(
        "3d-tuned-lr2",
        "all three tuned (the row above) + learning rate 2e-4",
        "mini-plain.json",
        (
            *AXES_ON,
            "model.mel_rank=384",
            'loss.exit_weights={"6": 3.0}',
            f"loss.dim_weights={UNIFORM_DIMS}",
            "training.learning_rate=0.0002",
        ),
    ),
    Variant(
        "3d-r384-exitw",
        "all three + rank 384 + full exit 3x",
        "mini-plain.json",
        (*AXES_ON, "model.mel_rank=384", 'loss.exit_weights={"6": 3.0}'),
    ),
    Variant("plain-300", "plain fine-tuning, 300 steps", "mini-plain.json", ("training.max_steps=300",)),
    Variant(  # the shared recipe as first measured (`shared` since)
        "3d-r384-exitw-300",
        "all three + rank 384 + full exit 3x, 300 steps",
        "mini-plain.json",
        (*AXES_ON, "model.mel_rank=384", 'loss.exit_weights={"6": 3.0}', "training.max_steps=300"),
    ),
    Variant("plain-400", "plain fine-tuning, 400 steps", "mini-plain.json", ("training.max_steps=400",)),
    Variant(
        "3d-warm",
        "plain fine-tuning (200 steps), then 200 steps of all three + rank 384 + full exit 3x",
        "mini-plain.json",
        (*AXES_ON, "model.mel_rank=384", 'loss.exit_weights={"6": 3.0}'),
        init="plain",
    ),
    Variant(
        "3d-exits36",
        "all three + rank 384 + exits 3 and 6 only, full exit 3x",
        "mini-plain.json",
        (*AXES_ON, "model.mel_rank=384", "model.exit_layers=[3, 6]", 'loss.exit_weights={"6": 3.0}'),
    ),
    Variant(
        "plain-neg1",
        "plain fine-tuning + 1 mined hard negative per pair",
        "mini-plain.json",
        ('data.num_negatives={"retrieval": 1}',),
    ),
    Variant(
        "3d-r384-exitw-neg1",
        "all three + rank 384 + full exit 3x + 1 mined hard negative per pair",
        "mini-plain.json",
        (*AXES_ON, "model.mel_rank=384", 'loss.exit_weights={"6": 3.0}', 'data.num_negatives={"retrieval": 1}'),
    ),
    Variant(  # bench/train_bf16.py times the same recipe in fp32 and bf16 on this CPU
        "shared-bf16",
        "the shared recipe trained under bf16 autocast (CPUs with bf16 instructions)",
        "mini-plain.json",
        (*SHARED, "training.bf16=true"),
        grid_steps=False,
    ),
    Variant(  # a second phase on the shipped model: only layers 4-6 train, every layers<=3 setting stays as it was
        "shared-freeze3",
        "the shared recipe (bf16), then 100 more steps training only layers 4-6 (`model.frozen_layers=3`; "
        "exits 4 and 6, full 3x)",
        "mini-plain.json",
        (
            *SHARED,
            "training.bf16=true",
            "model.frozen_layers=3",
            'loss.exit_weights={"2": 0, "3": 0, "6": 3.0}',
            "training.max_steps=100",
            "training.seed=1",
        ),
        init="shared-bf16",
        grid_steps=False,
    ),
    Variant(  # the "stock model as teacher": MSE to stock MiniLM's embedding at every exit (weighted)
        "shared-kd-stock",
        "the shared recipe (bf16) + distillation from stock MiniLM (MSE, kd_weight 100)",
        "mini-plain.json",
        (*SHARED, "training.bf16=true", "loss.kd_weight=100", 'loss.teacher="{stock}"'),
        grid_steps=False,
    ),
    Variant(
        "shared",
        "the paper's shared recipe (ml-embed-mini's default until the two-stage one): rank 384 + full exit 3x, 300 "
        "steps",
        "mini-plain.json",
        SHARED,
        grid_steps=False,
    ),
    # Dedicated models: each trained for one cut setting alone (same data, steps, seed and schedule as plain
    # fine-tuning); every elastic cell is reported as a ratio to the one for its setting (`ANCHORS`).
    Variant(
        "dedicated-layers3",
        "dedicated 3-layer model: the first 3 layers of MiniLM fine-tuned as a 3-layer model",
        "mini-plain.json",
        grid_steps=False,
        first_layers=3,
    ),
    Variant(
        "dedicated-dim96",
        "dedicated 96-dim model: a fine-tune whose loss sees only the first 96 dims",
        "mini-plain.json",
        ("loss.mrl=true", f"loss.dim_weights={ONLY_96}"),
        grid_steps=False,
    ),
    Variant(
        "dedicated-rank64",
        "dedicated rank-64 model: a fine-tune at fixed MEL rank 64",
        "mini-plain.json",
        ("model.mel_rank=64",),
        grid_steps=False,
    ),
    Variant(
        "dedicated-combined",
        "dedicated cut model: 3 layers, MEL rank 64 and a loss on the first 96 dims, together",
        "mini-plain.json",
        ("model.mel_rank=64", "loss.mrl=true", f"loss.dim_weights={ONLY_96}"),
        grid_steps=False,
        first_layers=3,
    ),
)
# Decoupled exits: the two-stage recipe (stage 1 trains the body at full depth with MEL and MRL; stage 2 freezes it
# and trains only exit modules, contrastive at the exit + KL to the full setting's scores), and Starbucks-style
# diagonal pairs for the shared design.
EXITS = ("loss.stage=exits", "loss.mel=true", "loss.mrl=true", "loss.self_distill=1.0")


def exit3_lora(rank: int) -> str:
    """The override giving a row one LoRA exit module at exit 3 of `rank` (ml-embed-mini's kind of module)."""
    return f'model.exit_modules={{"kind": "lora", "exits": [3], "rank": {rank}}}'


# Stage 2's loss and budget were measured with the rank-16 module ml-embed-mini shipped then; those rows keep it.
LORA16 = exit3_lora(16)
# Stage 2 trained 200 steps until it was given 300, and 300 until it was given 600 (`default-300`); the rows measured
# then keep their budget.
STAGE2_200 = "training.max_steps=200"
STAGE2_300 = "training.max_steps=300"
VARIANTS += (
    Variant(
        "default-body",
        "ml-embed-mini, two-stage recipe, stage 1 (mini.json): the body (MEL rank 384 + MRL, full exit only)",
        "mini.json",
        grid_steps=False,
    ),
    Variant(
        "default",
        "ml-embed-mini: the shipped two-stage recipe (mini.json, then mini-exits.json: one LoRA exit module, exit 3, "
        "rank 48, contrastive at the exit, 600 steps at learning rate 1e-3)",
        "mini-exits.json",
        init="default-body",
        grid_steps=False,
    ),
    Variant(
        "default-300",
        "two-stage, stage 2 as shipped until it was given 600 steps: the rank-48 module for 300 steps",
        "mini-exits.json",
        (STAGE2_300,),
        init="default-body",
        grid_steps=False,
    ),
    # Stage 2's own budget and loss (rank-16 module): shipped, contrastive at the exit for 200 steps; before, with a KL
    # term towards the full setting's in-batch scores (its teacher a second, full-depth pass each step) for 100 steps.
    Variant(
        "default-exits-kd",
        "two-stage, stage 2 as shipped before (rank 16): + KL to the full setting's scores (weight 1), 100 steps",
        "mini-exits.json",
        (LORA16, "loss.self_distill=1.0", "training.max_steps=100"),
        init="default-body",
        grid_steps=False,
    ),
    Variant(
        "default-exits-kd50",
        "two-stage, stage 2 (rank 16) + KL to the full setting's scores, 50 steps (warmup 10)",
        "mini-exits.json",
        (LORA16, "loss.self_distill=1.0", "training.max_steps=50", "training.warmup_steps=10"),
        init="default-body",
        grid_steps=False,
    ),
    Variant(
        "default-exits-kd200",
        "two-stage, stage 2 (rank 16) + KL to the full setting's scores, 200 steps",
        "mini-exits.json",
        (LORA16, "loss.self_distill=1.0", STAGE2_200),
        init="default-body",
        grid_steps=False,
    ),
    Variant(
        "default-exits100",
        "two-stage, stage 2 contrastive only (rank 16), 100 steps",
        "mini-exits.json",
        (LORA16, "training.max_steps=100"),
        init="default-body",
        grid_steps=False,
    ),
    # Stage 2's module width (at 200 steps): shipped, rank 48 (4.2% of the parameters; the goal allows 5%); was 16.
    *(
        Variant(
            f"default-lora{rank}",
            f"two-stage, stage 2 as shipped until this round (200 steps), a narrower LoRA exit module: rank {rank}",
            "mini-exits.json",
            (exit3_lora(rank), STAGE2_200),
            init="default-body",
            grid_steps=False,
        )
        for rank in (16, 32)
    ),
    # Stage 2's MEL rank draw: the paper's P(k) ~ k gives rank 64, the combined cut's, 8% of the module's steps.
    Variant(
        "default-ranks-uniform",
        "two-stage, stage 2 as shipped until this round (200 steps) with the MEL ranks drawn uniformly (was P(k) ~ k)",
        "mini-exits.json",
        ('loss.rank_weights={"64": 1, "128": 1, "256": 1, "384": 1}', STAGE2_200),
        init="default-body",
        grid_steps=False,
    ),
    # Stage 2's budget and step size at rank 48 (the module was budget-bound at rank 16: 50 -> 100 -> 200 steps).
    Variant(
        "default-exits200",
        "two-stage, stage 2 as shipped until this round: 200 steps (now 300)",
        "mini-exits.json",
        (STAGE2_200,),
        init="default-body",
        grid_steps=False,
    ),
    Variant(
        "default-lr2e-3",
        "two-stage, stage 2 as shipped until this round (200 steps) at learning rate 2e-3 (was 1e-3)",
        "mini-exits.json",
        ("training.learning_rate=0.002", STAGE2_200),
        init="default-body",
        grid_steps=False,
    ),
    # The exit's own norm: MiniLM (BERT) is post-LN and has no final norm, so the LoRA module owned none; with
    # `layer_norm` it also owns a copy of layer 3's output LayerNorm, the depth-3 path's last normalisation.
    Variant(
        "default-layernorm",
        "two-stage, the 300-step stage 2, the exit owning a copy of layer 3's LayerNorm (exit_modules.layer_norm)",
        "mini-exits.json",
        ('model.exit_modules={"kind": "lora", "exits": [3], "rank": 48, "layer_norm": true}', STAGE2_300),
        init="default-body",
        grid_steps=False,
    ),
    Variant(
        "two-stage-lora",
        "two-stage recipe: stage 1, then LoRA exit modules (exits 2/3/4, rank 16) on the frozen body",
        "mini-plain.json",
        (*EXITS, 'model.exit_modules={"kind": "lora", "exits": [2, 3, 4], "rank": 16}'),
        init="default-body",
        grid_steps=False,
    ),
    Variant(
        "two-stage-adapter",
        "two-stage recipe: stage 1, then residual adapters (exits 2/3/4, width 64) on the frozen body",
        "mini-plain.json",
        (*EXITS, 'model.exit_modules={"kind": "adapter", "exits": [2, 3, 4], "rank": 64}'),
        init="default-body",
        grid_steps=False,
    ),
    Variant(  # what fits the main job's time: one module, on the exit the tables report, a third of the steps
        "two-stage-lora3",
        "two-stage recipe: stage 1, then one LoRA exit module (exit 3, rank 16) for 100 steps",
        "mini-plain.json",
        (*EXITS, LORA16, "training.max_steps=100"),
        init="default-body",
        grid_steps=False,
    ),
    Variant(
        "two-stage-adapter3",
        "two-stage recipe: stage 1, then one residual adapter (exit 3, width 64) for 100 steps",
        "mini-plain.json",
        (*EXITS, 'model.exit_modules={"kind": "adapter", "exits": [3], "rank": 64}', "training.max_steps=100"),
        init="default-body",
        grid_steps=False,
    ),
    Variant(
        "starbucks",
        "shared weights, Starbucks-style diagonal pairs (2, 48) (3, 96) (4, 192) (6, all) + KL to the full setting",
        "mini-plain.json",
        (
            *SHARED,
            'loss.exit_dims={"2": [48], "3": [96], "4": [192]}',
            "loss.self_distill=1.0",
            "loss.exit_weights={}",
        ),
        grid_steps=False,
    ),
)
# A module of its own for the small MEL ranks, probed without a format change: one exit-3 module split in two by
# MEL rank (a narrow one for the ranks above 64, a wider one for rank 64, the combined cut's) is two stage-2
# trainings on the same body, each drawing only its own ranks; each is scored at the settings it would serve.
SEED1 = "training.seed=1"
SMALL_RANKS_MODULES = (
    'model.exit_modules={"kind": "lora", "exits": [3], "rank": 16, "small_ranks": {"up_to": 64, "rank": 32}}'
)
SMALL_RANKS_DRAWS = 'loss.rank_weights={"64": 3, "128": 1, "256": 2, "384": 3}'
SMALL_RANKS_ONLY = 'loss.rank_weights={"64": 1, "128": 0, "256": 0, "384": 0}'
LARGE_RANKS_ONLY = 'loss.rank_weights={"64": 0, "128": 128, "256": 256, "384": 384}'  # P(k) ~ k without 64


def stage2(name: str, label: str, *overrides: str, init: str = "default-body") -> Variant:
    """A row training only stage 2 (`mini-exits.json` changed by `overrides`) on the cached body `init`."""
    return Variant(name, label, "mini-exits.json", overrides, init=init, grid_steps=False)


SPLIT = "two-stage, stage 2 with a rank-16 module for MEL ranks > 64 and a rank-32 one for rank 64"
VARIANTS += (
    *(
        stage2(
            f"default-rank64-lora{rank}",
            f"two-stage, the 300-step stage 2 with a rank-{rank} module trained at MEL rank 64 only",
            exit3_lora(rank),
            SMALL_RANKS_ONLY,
            STAGE2_300,
        )
        for rank in (32, 48)
    ),
    stage2(  # the share of one 300-step stage 2 that the small ranks' module would get with a third of the draws
        "default-rank64-lora32-100",
        "two-stage, stage 2 with a rank-32 module trained at MEL rank 64 only, 100 steps",
        exit3_lora(32),
        SMALL_RANKS_ONLY,
        "training.max_steps=100",
    ),
    # The format itself (`exit_modules.small_ranks`): one stage 2 trains both modules, each step the one of its rank;
    # rank 64 drawn a third of the time (3 : 1 : 2 : 3), the rest P(k) ~ k as before.
    stage2(
        "default-small-ranks",
        f"{SPLIT} (exit_modules.small_ranks), rank 64 drawn 1/3 of the steps",
        SMALL_RANKS_MODULES,
        SMALL_RANKS_DRAWS,
        STAGE2_300,
    ),
    stage2(
        "default-small-ranks-seed1",
        f"{SPLIT} (exit_modules.small_ranks), rank 64 drawn 1/3 of the steps, seed 1",
        SMALL_RANKS_MODULES,
        SMALL_RANKS_DRAWS,
        STAGE2_300,
        SEED1,
        init="default-body-seed1",
    ),
    stage2(
        "default-small-ranks-600",
        f"{SPLIT} (exit_modules.small_ranks), rank 64 drawn 1/3 of the steps, 600 steps",
        SMALL_RANKS_MODULES,
        SMALL_RANKS_DRAWS,
        "training.max_steps=600",
    ),
    # the shared module at the budget of `default-small-ranks-600` (what `default` became)
    stage2(
        "default-600",
        "two-stage, stage 2 (one rank-48 module, P(k) ~ k) for 600 steps (the recipe `default` ships since)",
        "training.max_steps=600",
    ),
    stage2(
        "default-600-seed1",
        "two-stage, stage 2 (one rank-48 module, P(k) ~ k) for 600 steps (`default` since), seed 1",
        "training.max_steps=600",
        SEED1,
        init="default-body-seed1",
    ),
    stage2(  # 600 updates for the compute of 300: what the main job could ship at its present time
        "default-600-batch16",
        "two-stage, stage 2 for 600 steps at batch 16 (the compute of 300 steps at 32)",
        "training.max_steps=600",
        "training.per_device_train_batch_size=16",
    ),
    stage2(
        "default-large-ranks-lora16",
        "two-stage, the 300-step stage 2 with a rank-16 module trained at MEL ranks 128-384 only (P(k) ~ k)",
        LORA16,
        LARGE_RANKS_ONLY,
        STAGE2_300,
    ),
)
# A second seed (the sampler's order, dropout and MEL rank draws) of the rows the missed goals hinge on: full size
# (the body against plain fine-tuning) and layers=3 (the shipped module against the dedicated 3-layer model). How
# much of a gap one seed per row leaves to run-to-run noise. (`SEED1` above.)
VARIANTS += (
    Variant("plain-seed1", "plain fine-tuning, 300 steps, seed 1", "mini-plain.json", (SEED1,), grid_steps=False),
    Variant(
        "default-body-seed1",
        "ml-embed-mini, two-stage recipe, stage 1 (the body), seed 1",
        "mini.json",
        (SEED1,),
        grid_steps=False,
    ),
    Variant(
        "default-seed1",
        "two-stage, stage 2 as shipped until it was given 600 steps (300 steps), seed 1 (both stages)",
        "mini-exits.json",
        (STAGE2_300, SEED1),
        init="default-body-seed1",
        grid_steps=False,
    ),
    Variant(
        "dedicated-layers3-seed1",
        "dedicated 3-layer model, seed 1",
        "mini-plain.json",
        (SEED1,),
        grid_steps=False,
        first_layers=3,
    ),
    # The other anchors at seed 1: a cut's ratio moves with its anchor's own run-to-run noise too.
    Variant(
        "dedicated-dim96-seed1",
        "dedicated 96-dim model, seed 1",
        "mini-plain.json",
        ("loss.mrl=true", f"loss.dim_weights={ONLY_96}", SEED1),
        grid_steps=False,
    ),
    Variant(
        "dedicated-rank64-seed1",
        "dedicated rank-64 model, seed 1",
        "mini-plain.json",
        ("model.mel_rank=64", SEED1),
        grid_steps=False,
    ),
    Variant(
        "dedicated-combined-seed1",
        "dedicated cut model (3 layers, MEL rank 64, loss on the first 96 dims), seed 1",
        "mini-plain.json",
        ("model.mel_rank=64", "loss.mrl=true", f"loss.dim_weights={ONLY_96}", SEED1),
        grid_steps=False,
        first_layers=3,
    ),
)
# The model each setting is measured against (`mlembed.mini.report.ANCHORS`), at the shipped recipe's steps:
# `--only anchors` trains and scores these and the shipped default, and writes the anchors `mlembed mini` shows.
ANCHOR_ROWS = ("default-body", "default", "shared", "plain@300", "dedicated-layers3", "dedicated-dim96")
ANCHOR_ROWS += ("dedicated-rank64", "dedicated-combined")
GROUPS = {
    "anchors": ANCHOR_ROWS,
    "seed1": ("plain-seed1", "default-body-seed1", "default-seed1", "dedicated-layers3-seed1"),
    "seed1-anchors": ("dedicated-dim96-seed1", "dedicated-rank64-seed1", "dedicated-combined-seed1"),
    "stage2-600": ("default-600", "default-600-seed1", "default-600-batch16"),
    "small-ranks": ("default-small-ranks", "default-small-ranks-seed1"),
    "rank-split": (
        "default-rank64-lora32",
        "default-rank64-lora48",
        "default-large-ranks-lora16",
        "default-rank64-lora32-100",
    ),
}
SETTINGS = (("full", "full"), ("layers", "layers=3"), ("dim", "dim=96"), ("rank", "rank=64"), ("combined", "all 3"))


def resolve(name: str) -> Variant:
    """A variant by name; `NAME@STEPS` is that variant's recipe at a budget of STEPS body steps (a learning-curve
    point): the variant it starts from (`init`) is taken at STEPS, and a later stage keeps its share of the budget
    (the shipped default, 300 + 600 steps, is 150 + 300 at `default@150`). The label says the new budget: its own
    step count replaced where it names it ("plain fine-tuning, 1200 steps"), the body's appended otherwise."""
    base, _, steps = name.partition("@")
    known = {v.name: v for v in VARIANTS}
    if base not in known or (steps and not steps.isdigit()):
        raise SystemExit(f"unknown variant {name!r}; variants: {sorted(known)} (NAME@STEPS for another step count)")
    variant = known[base]
    body = body_steps(variant)
    if not steps or body is None or int(steps) == body:
        return variant
    before = own_steps(variant)
    own, named = max(1, round(before * int(steps) / body)), f"{before} steps"
    label = (
        variant.label.replace(named, f"{own} steps") if named in variant.label else f"{variant.label} [{steps} steps]"
    )
    return replace(
        variant,
        name=name,
        label=label,
        overrides=(*variant.overrides, f"training.max_steps={own}"),
        init=f"{variant.init}@{steps}" if variant.init else None,
    )


def setting(variant: Variant, key: str) -> Any:
    """The value `section.key` the variant trains with: its config file's, after its overrides (None: no training
    or no such key)."""
    from mlembed.mini.pipeline import CONFIGS
    from mlembed.train.config import apply_overrides

    if variant.config is None:
        return None
    raw = json.loads((CONFIGS / variant.config).read_text())
    section, _, name = key.partition(".")
    overrides = [GRID_STEPS] * variant.grid_steps + list(variant.overrides)
    return apply_overrides(raw, overrides).get(section, {}).get(name)


def own_steps(variant: Variant) -> int | None:
    """The steps a variant trains for by its own definition (None: no training)."""
    steps = setting(variant, "training.max_steps")
    return None if steps is None else int(steps)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache-dir", type=Path, default=None, help="the mini cache (default $MLEMBED_CACHE or ~/.cache)")
    p.add_argument(
        "--only",
        default=None,
        help="comma-separated variant names (default: all); NAME@STEPS trains NAME for STEPS steps",
    )
    p.add_argument(
        "--steps",
        default="",
        help="comma-separated step counts: every chosen variant at each (a learning "
        "curve); its own step count is the plain name",
    )
    p.add_argument("--redo", default="", help="comma-separated variants to train and score again")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default torch's; 1 helps when shared)")
    p.add_argument("--train-only", action="store_true", help="train what is missing, score nothing")
    p.add_argument("-o", "--output", type=Path, default=None, help="folder for table.md and results.json")
    return p.parse_args()


def prepare(paths: Any) -> None:
    """The pipeline's data, out-of-domain set and stock model, when missing."""
    from mlembed.mini import pipeline

    needed = [step for step in pipeline.steps() if step.name in ("data", "data-ood", "convert")]
    pipeline.run_steps(needed, paths)


def variant_config(variant: Variant, out: Path, paths: Any) -> Any:
    """The recipe config the variant trains with, writing to `out`."""
    from mlembed.mini import pipeline

    overrides = [
        *((GRID_STEPS,) if variant.grid_steps else ()),
        *(o.replace("{stock}", str(paths.stock)) for o in variant.overrides),
        f"training.output_dir={json.dumps(str(out))}",
    ]
    if variant.init:
        init = model_folder(resolve(variant.init), paths)
        if not (init / "model.safetensors").is_file():
            raise SystemExit(f"{variant.name} starts from {variant.init}, which is not trained yet: add it to --only")
        overrides.append(f"model.base={init}")
    elif variant.first_layers:
        overrides.append(f"model.base={first_layers(paths, variant.first_layers)}")
    overrides += pipeline.precision_overrides(overrides, pipeline.native_bf16_flags())  # as `mlembed mini` trains
    return pipeline.load_recipe(variant.config, pipeline.minilm_path(), paths, overrides)


def why_train(variant: Variant, paths: Any, redo: bool) -> str | None:
    """Why the variant's model must be trained now (None: the cached one is this very recipe, as the pipeline
    checks its stages: `summary.json`'s recipe fingerprint)."""
    from mlembed.mini import pipeline

    folder = model_folder(variant, paths)
    if variant.config is None:
        return None
    if redo:
        return "--redo"
    if not (folder / "model.safetensors").is_file():
        return "not trained yet"
    if not pipeline.trained_from(folder.parent, variant_config(variant, folder.parent, paths)):
        return "its cached model came from another recipe"
    return None


def train_variant(variant: Variant, folder: Path, paths: Any) -> None:
    from mlembed.mini import pipeline

    pipeline.train(variant_config(variant, folder, paths))


def first_layers(paths: Any, layers: int) -> Path:
    """The stock model cut to its first `layers` layers (`export_slim`), the base of a dedicated shallow model."""
    from mlembed.export.slim import export_slim

    out = paths.root / "ablation" / f"_stock-layers{layers}"
    if not (out / "model.safetensors").is_file():
        export_slim(paths.stock, out, layers=layers)
    return out


def model_folder(variant: Variant, paths: Any) -> Path:
    return paths.stock if variant.config is None else paths.root / "ablation" / variant.name / "final"


def score_variant(variant: Variant, paths: Any, sets: dict[str, Any], redo: bool) -> dict[str, Any]:
    """{set: rows} for the variant's model, cached in `ablation/<name>/eval.json` until the model changes."""
    from mlembed.mini import pipeline

    folder = model_folder(variant, paths)
    cached = paths.root / "ablation" / variant.name / "eval.json"
    if not redo and pipeline._newer(cached, folder) and set(json.loads(cached.read_text())) == set(sets):
        return json.loads(cached.read_text())
    start = time.perf_counter()
    results = pipeline.evaluate_model(folder, sets)
    logging.getLogger("ablation").info("%s scored in %.0f s", variant.name, time.perf_counter() - start)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(results, indent=2) + "\n")
    return results


def grid_table(rows: dict[str, dict[str, Any]], set_name: str, set_title: str, labels: dict[str, str]) -> str:
    """nDCG@10 at every setting, MRR@10 at full, and the goal ratios against plain fine-tuning on one held-out set."""
    from mlembed.mini.report import by_axis

    head = [
        "model",
        *(label for _, label in SETTINGS),
        "MRR@10 full",
        "full - plain",
        "layers=3 / full",
        "dim=96 / full",
        "steps",
        "train s",
    ]
    text = f"**{set_title}** (nDCG@10 unless named)\n\n| " + " | ".join(head) + " |\n|---|"
    text += "---:|" * (len(head) - 1) + "\n"
    plain = {  # plain fine-tuning's full score at each steps (`plain`, or a learning-curve point `plain@STEPS`)
        row_steps(row): by_axis(row["eval"][set_name])["full"]["ndcg_at_10"]
        for name, row in rows.items()
        if name.partition("@")[0] == "plain"
    }
    for name, row in rows.items():
        cells = by_axis(row["eval"][set_name])
        full = cells["full"]["ndcg_at_10"]
        values = [f"{cells[a]['ndcg_at_10']:.3f}" if a in cells else "n/a" for a, _ in SETTINGS]
        if "combined" in cells and cells["combined"]["rank"] is None:
            values[-1] += "*"
        values.append(f"{cells['full']['mrr_at_10']:.3f}")
        same = plain.get(row_steps(row))
        values.append("-" if same is None or name.partition("@")[0] == "plain" else f"{full - same:+.3f}")
        values += [f"{cells[a]['ndcg_at_10'] / full:.0%}" if a in cells else "n/a" for a in ("layers", "dim")]
        train = row.get("train") or {}
        values += [str(train.get("steps", "-")), str(round(train["seconds"])) if train.get("seconds") else "-"]
        text += f"| {labels[name]} | " + " | ".join(values) + " |\n"
    return text + "\n\\* dense model, no rank axis: layers=3 + dim=96 only.\n"


def row_steps(row: dict[str, Any]) -> int | None:
    """The steps the row is compared at: its body's (a second stage that trains only exit modules on a frozen body
    is compared with the anchors of the body's steps), else its own training's."""
    return row.get("body_steps") or (row.get("train") or {}).get("steps")


def body_steps(variant: Variant) -> int | None:
    """Steps of the variant's body: the first variant of its `init` chain, which trained from stock MiniLM."""
    while variant.init:
        variant = resolve(variant.init)
    return own_steps(variant)


def exit_stage(variant: Variant) -> bool:
    """Whether the variant is a second stage that trains only exit modules on a frozen body (`loss.stage=exits`)."""
    return setting(variant, "loss.stage") == "exits"


def anchor_ratios(rows: dict[str, dict[str, Any]], name: str, set_name: str) -> dict[str, float | None]:
    """{setting: this row's nDCG@10 / its anchor's (`ANCHORS`, trained for the same steps)}; full: a difference to
    plain fine-tuning in nDCG points instead. None where the anchor or the cell is missing."""
    from mlembed.mini import report
    from mlembed.mini.report import by_axis

    cells, steps = by_axis(rows[name]["eval"][set_name]), row_steps(rows[name])
    out: dict[str, float | None] = {}
    for axis, anchor in report.ANCHORS.items():
        match = [
            r for n, r in rows.items() if n.partition("@")[0] == anchor and row_steps(r) == steps and r is not None
        ]
        if not match or axis not in cells:
            out[axis] = None
            continue
        own = report.anchor_score(axis, match[0]["eval"][set_name])  # the dedicated model at its trained setting
        out[axis] = report.against_anchor(axis, cells[axis]["ndcg_at_10"], own)
    return out


def anchor_table(rows: dict[str, dict[str, Any]], set_name: str, set_title: str, labels: dict[str, str]) -> str:
    """Markdown: every trained row's cells against the dedicated models of the same steps (full: points from plain)."""
    from mlembed.mini import report

    text = (
        f"**{set_title}: each cell against a model trained for that setting alone** (full: nDCG@10 points from plain "
        "fine-tuning; the cuts: nDCG@10 / the dedicated model's; same steps)\n\n"
        "| model | steps | full - plain | layers=3 / dedicated | dim=96 / dedicated | rank=64 / dedicated | "
        "all 3 / dedicated |\n|---|---:|---:|---:|---:|---:|---:|\n"
    )
    for name, row in rows.items():
        if row["config"] is None or name.partition("@")[0] in report.ANCHORS.values():
            continue
        ratios = anchor_ratios(rows, name, set_name)
        cells = ["n/a" if v is None else report.format_against(axis, v) for axis, v in ratios.items()]
        text += f"| {labels[name]} | {row_steps(row) or '-'} | " + " | ".join(cells) + " |\n"
    return text


def save_anchors(rows: dict[str, dict[str, Any]], paths: Any, command: str) -> Path | None:
    """The anchors at the shipped recipe's steps, when every one of them is in `rows`: `<cache>/ablation/anchors.json`
    (`mlembed mini` reads it); None when one is missing."""
    from mlembed.mini import report

    steps = body_steps(resolve("default"))
    scores: dict[str, dict[str, Any]] = {}
    for axis, anchor in report.ANCHORS.items():
        match = [n for n, row in rows.items() if n.partition("@")[0] == anchor and row_steps(row) == steps]
        if not match:
            return None
        for set_name, results in rows[match[0]]["eval"].items():
            own = report.anchor_score(axis, results)
            scores.setdefault(set_name, {})[axis] = {"model": match[0], "ndcg_at_10": own}
    out = paths.root / "ablation" / report.ANCHORS_FILE
    report.write_anchors(out, scores, steps, command)
    return out


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from mlembed.mini import pipeline, report

    if args.threads:
        torch.set_num_threads(args.threads)
    paths = pipeline.MiniPaths((args.cache_dir or pipeline.default_cache_dir()).expanduser())
    names = [v.name for v in VARIANTS] if args.only is None else args.only.split(",")
    names = [row for name in names for row in GROUPS.get(name, (name,))]
    chosen = [resolve(name) for name in names]
    for steps in filter(None, args.steps.split(",")):
        chosen += [resolve(f"{v.name.partition('@')[0]}@{steps}") for v in chosen if v.config]
    chosen = list({v.name: v for v in chosen}.values())
    redo = set(filter(None, args.redo.split(",")))
    prepare(paths)
    for variant in chosen:  # all training first: a half-finished grid still has every model it trained
        why = why_train(variant, paths, variant.name in redo)
        if why:
            print(f"training {variant.name} ({why}): {variant.label}", flush=True)
            train_variant(variant, model_folder(variant, paths).parent, paths)
    if args.train_only:
        return 0
    sets = pipeline.load_eval_sets(paths)
    rows = {}
    for variant in chosen:
        summary = model_folder(variant, paths).parent / "summary.json"
        rows[variant.name] = {
            "label": variant.label,
            "config": variant.config,
            "overrides": list(variant.overrides),
            "train": json.loads(summary.read_text()) if variant.config and summary.is_file() else None,
            "body_steps": body_steps(variant) if exit_stage(variant) else None,
            "eval": score_variant(variant, paths, sets, variant.name in redo),
        }
    labels = {name: row["label"] for name, row in rows.items()}
    parts = []
    for name, title in report.EVAL_SETS:
        data = sets[name]
        parts.append(grid_table(rows, name, f"{title}, {len(data.queries)} queries", labels))
    for name, title in report.EVAL_SETS:
        parts.append(anchor_table(rows, name, title, labels))
    for name, title in report.EVAL_SETS:
        results = {variant: row["eval"][name] for variant, row in rows.items()}
        parts.append(report.language_table(results, title, labels))
    table = "\n".join(parts)
    out = args.output or paths.root / "ablation"
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table, encoding="utf-8")
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(table)
    print(f"wrote {out / 'table.md'} and {out / 'results.json'}")
    anchors = save_anchors(rows, paths, " ".join(["python", *sys.argv]))
    if anchors:
        print(f"wrote {anchors}: `mlembed mini` shows its table against them")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
