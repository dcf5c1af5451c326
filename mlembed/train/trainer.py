"""`MLEmbedTrainer`: 3D Matryoshka Learning as a `transformers.Trainer` (one loop for fine-tuning and the recipe).

What it adds to the stock Trainer, and nothing else:
* the data: a `datasets.Dataset` / `DatasetDict` becomes a `TrainingCorpus`; `OneDatasetBatchSampler` (one dataset
  per step on every process; accelerate shards it) and `MLEmbedCollator` (built from the tokenizer when not given);
* `compute_loss`: `ThreeDObjective.step`, which embeds the queries and the passage side (positives, negatives) in a
  forward pass each, at their own padded widths, returning the MLL exits, the MEL rank drawn per step, in-batch
  negatives on retrieval datasets; the sentence-transformers loss `MLEmbed3DLoss` is the same objective behind
  another front end;
* logs: running loss per dataset, the rank drawn, texts and tokens per second (per process).
Everything else (optimiser, schedule, bf16, gradient checkpointing, DeepSpeed / FSDP, checkpoints and resume,
`torchrun` / `accelerate launch`) is the stock Trainer's.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import Trainer

from mlembed.data.collator import MLEmbedCollator
from mlembed.data.format import as_training_corpus
from mlembed.data.sampler import OneDatasetBatchSampler
from mlembed.losses.objective import ThreeDObjective

logger = logging.getLogger(__name__)


class MLEmbedTrainer(Trainer):
    """A `transformers.Trainer` training an `MLEmbedModel` with the 3D-ML objective.

    Used as any Trainer:

        MLEmbedTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer).train()

    Args:
        model: the `MLEmbedModel` to train (its config gives the exits, dims and MEL ranks).
        objective: a `ThreeDObjective` (default: `ThreeDObjective.from_config(model.config)`, the paper's setting).
        teacher: an optional frozen ML-Embed model distilled from at its own full setting (needs the objective's
            `kd_weight` > 0).
        **kwargs: everything `transformers.Trainer` takes. `train_dataset` is a `datasets.Dataset` with
            (anchor, positive[, negative | negative_1..N]) or (query, passage[, negative_1..N]) columns, a
            `DatasetDict` of such datasets (one dataset per step, named by key; the name decides the type as in
            the parquet format), or a `TrainingCorpus`. Without `data_collator`, an `MLEmbedCollator` is built from
            `processing_class` (the tokenizer) and the model config. `args` are used as given.
    """

    def __init__(
        self, model: Any, objective: ThreeDObjective | None = None, teacher: Any = None, **kwargs: Any
    ) -> None:
        if kwargs.get("train_dataset") is not None:
            kwargs["train_dataset"] = as_training_corpus(kwargs["train_dataset"])
        if kwargs.get("data_collator") is None:
            kwargs["data_collator"] = _default_collator(model, kwargs.get("processing_class"))
        super().__init__(model=model, **kwargs)
        if self.args.fsdp and not self.is_fsdp_enabled:
            logger.warning(
                "fsdp=%s was asked for, but accelerate runs FSDP on GPUs only: this %s run is plain data parallel "
                "(same results, no sharding). DeepSpeed ZeRO-2/3 (training.deepspeed) also shard on the CPU.",
                self.args.fsdp,
                self.args.device.type,
            )
        self.objective = objective if objective is not None else ThreeDObjective.from_config(model.config)
        _record_sequence_length(model.config, self.data_collator)
        self.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None
        if self.teacher is not None and self.objective.kd_weight <= 0:
            raise ValueError("a teacher needs the objective's kd_weight > 0 (the weight of the distillation term)")
        self._running: dict[str, list[float]] = defaultdict(list)
        self._last_rank: int | None = None
        self._texts, self._tokens, self._since = 0, 0, None  # throughput since the last log, this process

    def get_train_dataloader(self) -> DataLoader:
        """Batches of one dataset per step on every process; accelerate gives batch i to process i % world."""
        if self.train_dataset is None:
            raise ValueError("MLEmbedTrainer needs a train_dataset to train")
        dataset = self.train_dataset
        sampler = OneDatasetBatchSampler(
            dataset.dataset_lengths,
            batch_size=self.args.per_device_train_batch_size,
            world_size=self.args.world_size,
            seed=self.args.seed,
            drop_last=True,
            names=[d.name for d in dataset.datasets],
        )
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        def embed(batch: dict[str, torch.Tensor], rank: int | None, layers: int | None = None) -> dict:
            exits = [layers] if layers is not None else self.objective.exits or True
            ids, mask = batch["input_ids"], batch["attention_mask"]
            return model(input_ids=ids, attention_mask=mask, rank=rank, layers=layers, exits=exits).exit_embeddings

        if self._since is None:
            self._since = time.perf_counter()
        self._texts += inputs["input_ids"].shape[0]
        self._tokens = self._tokens + inputs["attention_mask"].sum()  # stays on the device: no sync per step
        batch = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
        total, parts, rank = self.objective.step(
            embed, batch, inputs["num_columns"], use_in_batch=bool(inputs["in_batch"]), teacher=self.teacher
        )
        self._running[f"loss/{inputs['dataset']}"].append(float(total.detach()))
        self._last_rank = rank
        return (total, {"parts": parts}) if return_outputs else total

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Adds the running loss per dataset and this process's texts and tokens per second since the last log, and
        the MEL rank drawn last."""
        if "loss" in logs:
            for key, values in self._running.items():
                logs[key] = round(sum(values) / len(values), 4)
            self._running.clear()
            if self._last_rank is not None:
                logs["mel_rank"] = self._last_rank
            if self._since is not None:
                seconds = max(time.perf_counter() - self._since, 1e-9)
                logs["throughput/texts_per_s"] = round(self._texts / seconds, 2)
                logs["throughput/tokens_per_s"] = round(float(self._tokens) / seconds, 1)
                self._texts, self._tokens, self._since = 0, 0, time.perf_counter()
        super().log(logs, *args, **kwargs)


def _default_collator(model: Any, tokenizer: Any) -> MLEmbedCollator:
    """The collator a Trainer user would write: the tokenizer, the model's EOS rule and its sequence length."""
    if tokenizer is None:
        raise ValueError("MLEmbedTrainer needs processing_class= (the tokenizer) or data_collator= to tokenise texts")
    config = model.config
    return MLEmbedCollator(tokenizer, max_length=config.sequence_length, append_eos=config.append_eos)


def _record_sequence_length(config: Any, collator: Any) -> None:
    """The length the model is trained for becomes its `max_seq_length` (what `encode` and every export use)."""
    length = getattr(collator, "max_length", None)
    positions = getattr(config, "max_positions", None)
    if isinstance(length, int) and length >= 2 and (positions is None or length <= positions):
        if config.max_seq_length != length:
            logger.info("recording max_seq_length=%d (the training length) in the model config", length)
        config.max_seq_length = length
