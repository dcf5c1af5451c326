"""`MLEmbedTrainer`: 3D Matryoshka Learning as a `transformers.Trainer` (one loop for fine-tuning and the recipe).

What it adds to the stock Trainer, and nothing else:
* the data loader: `OneDatasetBatchSampler` (one dataset per step on every process; accelerate shards it) and
  `MLEmbedCollator`;
* `compute_loss`: one forward pass over queries, positives and negatives together (one DDP forward per step),
  returning every MLL exit; a MEL rank drawn per step in proportion to rank, the same on all processes; the 3D
  loss (in-batch on retrieval datasets through a differentiable gather, hard negatives, MRL weights);
  optional distillation from a frozen teacher run at its own settings;
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

from mlembed.data.sampler import OneDatasetBatchSampler
from mlembed.losses.matryoshka import ThreeDMatryoshkaLoss, sample_mel_rank

logger = logging.getLogger(__name__)


class MLEmbedTrainer(Trainer):
    """A `transformers.Trainer` training an `MLEmbedModel` with the 3D-ML loss.

    Args:
        model: the `MLEmbedModel` to train (its config gives the exits, dims and MEL ranks).
        loss: a `ThreeDMatryoshkaLoss` (default: from the model config, temperature 0.05).
        mel: sample a MEL rank per step (`False`: always the full rank; the MEL ablation).
        teacher: an optional frozen embedding model with `forward(input_ids, attention_mask)` returning
            `.embeddings` (used with `loss.kd_weight` > 0); it runs at its own full settings.
        **kwargs: everything `transformers.Trainer` takes (`args`, `train_dataset` = a `TrainingCorpus`,
            `data_collator` = an `MLEmbedCollator`, `processing_class` = the tokenizer, callbacks, ...).
    """

    def __init__(
        self,
        model: Any,
        loss: ThreeDMatryoshkaLoss | None = None,
        mel: bool = True,
        teacher: Any = None,
        **kwargs: Any,
    ) -> None:
        args = kwargs.get("args")
        if args is not None:
            args.remove_unused_columns = False  # the collator needs the raw texts, not model-signature columns
            if args.ddp_find_unused_parameters is None:
                args.ddp_find_unused_parameters = False  # every parameter takes part in every step
        super().__init__(model=model, **kwargs)
        if self.args.fsdp and not self.is_fsdp_enabled:
            logger.warning(
                "fsdp=%s was asked for, but accelerate runs FSDP on GPUs only: this %s run is plain data parallel "
                "(same results, no sharding). DeepSpeed ZeRO-2/3 (training.deepspeed) also shard on the CPU.",
                self.args.fsdp,
                self.args.device.type,
            )
        self.loss_fn = loss if loss is not None else ThreeDMatryoshkaLoss.from_config(model.config)
        self.use_mel = mel and getattr(model.config, "mel_rank", None) is not None
        self.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None
        if self.teacher is not None and self.loss_fn.kd_weight <= 0:
            raise ValueError("a teacher needs loss.kd_weight > 0 (the weight of the distillation term)")
        self._running: dict[str, list[float]] = defaultdict(list)
        self._last_rank: int | None = None
        self._texts, self._tokens, self._since = 0, 0, None  # throughput since the last log, this process

    def get_train_dataloader(self) -> DataLoader:
        """Batches of one dataset per step on every process; accelerate gives batch i to process i % world."""
        dataset = self.train_dataset
        sampler = OneDatasetBatchSampler(
            dataset.dataset_lengths,
            batch_size=self.args.per_device_train_batch_size,
            world_size=self.args.world_size,
            seed=self.args.seed,
            drop_last=True,
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
        config = self.accelerator.unwrap_model(model).config
        rank = sample_mel_rank(config.mel_ranks) if self.use_mel else None
        batch = _stack(inputs)
        if self._since is None:
            self._since = time.perf_counter()
        self._texts += batch["input_ids"].shape[0]
        self._tokens = self._tokens + batch["attention_mask"].sum()  # stays on the device: no sync per step
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], rank=rank, exits=True)
        exit_q, exit_p, exit_n = _split(out.exit_embeddings, batch["sizes"])
        teacher = self._teacher_embeddings(batch) if self.teacher is not None else None
        total, parts = self.loss_fn(
            exit_q,
            exit_p,
            exit_n,
            use_in_batch=bool(inputs["in_batch"]),
            passage_ids=inputs.get("passage_ids"),
            teacher=teacher,
        )
        self._running[f"loss/{inputs['dataset']}"].append(float(total.detach()))
        self._last_rank = rank
        return (total, {"parts": parts}) if return_outputs else total

    @torch.no_grad()
    def _teacher_embeddings(self, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        out = self.teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        q, p, n = torch.split(out.embeddings, batch["sizes"])
        return q, p, (n if n.shape[0] else None)

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


def _stack(inputs: dict[str, Any]) -> dict[str, Any]:
    """Queries, positives and negatives as one right-padded batch.

    Shapes:
        query (B, Tq), passage (B, Tp), negatives (B*N, Tn) -> input_ids, attention_mask (B*(2+N), max T).
    """
    parts = [inputs["query"], inputs["passage"]] + ([inputs["negatives"]] if inputs.get("negatives") else [])
    width = max(p["input_ids"].shape[1] for p in parts)
    ids, mask = [], []
    for part in parts:
        pad = width - part["input_ids"].shape[1]
        ids.append(torch.nn.functional.pad(part["input_ids"], (0, pad), value=0))
        mask.append(torch.nn.functional.pad(part["attention_mask"], (0, pad), value=0))
    sizes = [p["input_ids"].shape[0] for p in parts] + ([] if inputs.get("negatives") else [0])
    return {"input_ids": torch.cat(ids), "attention_mask": torch.cat(mask), "sizes": sizes}


def _split(exits: dict[int, torch.Tensor], sizes: list[int]) -> tuple[dict, dict, dict | None]:
    q, p, n = {}, {}, {}
    for layer, emb in exits.items():
        q[layer], p[layer], n[layer] = torch.split(emb, sizes)
    return q, p, (n if sizes[2] else None)
