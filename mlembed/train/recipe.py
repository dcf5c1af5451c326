"""The training recipe entry: `mlembed train --config configs/<name>.json` (the loop is `MLEmbedTrainer`).

Launch, one process (CPU or one GPU):
    mlembed train --config configs/0.6b.json
Many GPUs, one node (accelerate or torchrun, both run the same entry):
    accelerate launch --config_file configs/accelerate/8gpu.yaml -m mlembed.cli train --config configs/0.6b.json
    torchrun --nproc_per_node 8 -m mlembed.cli train --config configs/0.6b.json
Many nodes: `configs/accelerate/multinode.yaml` with `--machine_rank`, `--main_process_ip` per node.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from mlembed.train.config import TrainConfig

logger = logging.getLogger(__name__)


def build_model(config: TrainConfig) -> tuple[Any, Any]:
    """The student and its tokenizer: an ML-Embed folder as is (the installed classes, never the folder's copy of
    the code; a dense one factorised when `model.mel_rank` is set), or a stock backbone converted (SVD init; its own
    remote code only with `model.trust_remote_code`)."""
    from transformers import AutoModel

    from mlembed.export.convert import add_mel, from_backbone, is_mlembed_folder, load_tokenizer
    from modeling_mlembed import MLEmbedModel

    spec = config.model
    trust = spec.trust_remote_code
    tokenizer = load_tokenizer(spec.base, trust_remote_code=trust)
    if is_mlembed_folder(spec.base):
        model = MLEmbedModel.from_pretrained(spec.base, dtype=torch.float32)
        if spec.mel_rank is not None and model.mel is None:  # a dense ML-Embed folder (a plain fine-tune) gains MEL
            model = add_mel(model, spec.mel_rank)
        elif spec.mel_rank is not None and spec.mel_rank != model.config.mel_rank:
            raise ValueError(
                f"model.mel_rank={spec.mel_rank}, but {spec.base} is factorised at mel_rank={model.config.mel_rank}: "
                "leave model.mel_rank unset (or equal) to continue from it"
            )
    else:
        axes = {
            k: v for k, v in {"exit_layers": spec.exit_layers, "matryoshka_dims": spec.matryoshka_dims}.items() if v
        }
        backbone = AutoModel.from_pretrained(spec.base, dtype=torch.float32, trust_remote_code=trust)
        model = from_backbone(backbone, mel_rank=spec.mel_rank, **axes)
    if spec.exit_modules is not None:
        add_exit_modules(model, spec.exit_modules)
    if spec.frozen_layers:
        freeze_below(model, spec.frozen_layers)
    return model.to(getattr(torch, spec.dtype)), tokenizer


def add_exit_modules(model: Any, spec: dict[str, Any]) -> None:
    """`model.exit_modules` of the recipe on the base: added (identity at init) where it has none, kept where it has
    the same ones; other modules already in the base are an error (never silently replaced)."""
    from configuration_mlembed import check_exit_modules

    wanted = check_exit_modules(spec, model.config.exit_layers, model.config.mel_ranks)
    if model.config.exit_modules is None:
        model.add_exit_modules(**wanted)
    elif model.config.exit_modules != wanted:
        raise ValueError(
            f"model.exit_modules={wanted}, but the base has other exit modules {model.config.exit_modules}: "
            "leave model.exit_modules unset (or equal) to continue training them"
        )


def train_only_exit_modules(model: Any) -> None:
    """The second stage of the two-stage recipe: everything but the exit modules frozen (in place), so the full path
    and every exit without a module keep their outputs bit for bit."""
    if model.exit_modules is None:
        raise ValueError('loss.stage "exits" trains exit modules, but the model has none: set model.exit_modules')
    model.requires_grad_(False)
    model.exit_modules.requires_grad_(True)


def freeze_below(model: Any, layers: int) -> None:
    """Leave only the layers after the first `layers` trainable (in place): the outputs at depth <= `layers` then
    cannot change, at any rank and dim. An error names the allowed range."""
    total = model.config.num_hidden_layers
    if not 0 < layers < total:
        raise ValueError(f"model.frozen_layers must be in 1..{total - 1} (the model has {total} layers), got {layers}")
    model.requires_grad_(False)
    for layer in model.layer_stack[layers:]:
        layer.requires_grad_(True)


def build_trainer(config: TrainConfig, **training_overrides: Any) -> Any:
    """Model, data, objective and `MLEmbedTrainer` from a recipe config (nothing trained yet)."""
    from mlembed.data.collator import MLEmbedCollator
    from mlembed.data.format import load_parquet_corpus
    from mlembed.losses.objective import ThreeDObjective
    from mlembed.train.trainer import MLEmbedTrainer
    from modeling_mlembed import MLEmbedModel

    # the model first: with ZeRO-3, `TrainingArguments` switches on `deepspeed.zero.Init`, under which a stock
    # backbone's embedding could not be factorised (it would be partitioned); DeepSpeed partitions it at start
    model, tokenizer = build_model(config)
    if config.loss.stage == "exits":
        train_only_exit_modules(model)
    args = config.training_arguments(**training_overrides)
    data = config.data
    corpus = load_parquet_corpus(
        config.data_files(),
        dataset_types=data.dataset_types or None,
        instructions=data.instructions or None,
        num_negatives=data.num_negatives or None,
        max_rows=data.max_rows,
        seed=args.seed,
        on_invalid=data.on_invalid,
    )
    spec = config.loss
    objective = ThreeDObjective.from_config(
        model.config,
        mel=spec.mel,
        mll=spec.mll,
        mrl=spec.mrl,
        temperature=spec.temperature,
        kd_weight=spec.kd_weight,
        weights=spec.int_keyed("dim_weights"),
        exit_weights=spec.int_keyed("exit_weights"),
        self_distill=spec.self_distill,
        separate_exits=spec.stage == "exits",
        exit_dims={int(k): v for k, v in spec.exit_dims.items()} or None,
        rank_weights=spec.int_keyed("rank_weights"),
    )
    teacher = MLEmbedModel.from_pretrained(spec.teacher) if spec.teacher else None
    return MLEmbedTrainer(
        model,
        objective=objective,
        teacher=teacher,
        args=args,
        train_dataset=corpus,
        data_collator=MLEmbedCollator(tokenizer, max_length=data.max_length, append_eos=model.config.append_eos),
        processing_class=tokenizer,
    )


def run(config: TrainConfig, resume_from_checkpoint: str | bool | None = None, **training_overrides: Any) -> Path:
    """Train, then save the final ML-Embed folder (`<output_dir>/final`) and its Hub folder (`<output_dir>/hub`)."""
    trainer = build_trainer(config, **training_overrides)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    final = Path(trainer.args.output_dir) / "final"
    trainer.save_model(str(final))
    if config.export.hub and trainer.is_world_process_zero():
        from mlembed.export.hub import export_hub

        export_hub(final, Path(trainer.args.output_dir) / "hub", repo_id=config.export.repo_id)
    release(trainer)
    return final


def release(trainer: Any) -> None:
    """Tear a finished trainer's DeepSpeed engine down (`engine.destroy()`, through accelerate's `free_memory`).

    Why: the engine's hooks on the model and on the gradient accumulators make reference cycles through C++ that
    `gc` cannot break, so the engine, and the process groups it holds, would live to the interpreter's exit (see
    `distributed.close`). The trainer cannot train afterwards."""
    if getattr(trainer, "is_deepspeed_enabled", False):
        trainer.accelerator.free_memory()
