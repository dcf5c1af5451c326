"""`MLEmbed3DLoss`: 3D Matryoshka Learning (MEL ranks, MLL exits, MRL dims) as a sentence-transformers loss.

`SentenceTransformerTrainer` users train the elastic model with it exactly as with `MultipleNegativesRankingLoss`.
It is a thin adapter over `ThreeDObjective`, the objective `MLEmbedTrainer` optimises too (same defaults, same
numbers; a test compares loss and gradients of both on one batch, in one process and in two):

* the columns (anchor, positive, negatives) are stacked into one flat batch and run through the
  SentenceTransformer as the trainer holds it (a DDP / FSDP wrapper included, so gradients are synchronised), the
  anchors in one pass and the rest in another (`embed_by_side`), with the exits and the step's MEL rank as extra
  features that sentence-transformers' `Transformer` module forwards to the `MLEmbedModel`;
* the exits' token states come back as `all_layer_embeddings` (sentence-transformers keeps the model's
  `hidden_states` while `config.output_hidden_states` is set, which is done for the call only) and are pooled
  with the model's own pooling.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from mlembed import CITATION
from mlembed.losses.columns import stack_columns
from mlembed.losses.objective import ThreeDObjective

logger = logging.getLogger(__name__)


def _unwrap(model: nn.Module) -> nn.Module:
    """The SentenceTransformer inside `torch.compile`, DDP, FSDP, DeepSpeed or DataParallel wrappers."""
    compiled = getattr(model, "_orig_mod", None)
    if isinstance(compiled, nn.Module):
        model = compiled
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


def _elastic_model(model: nn.Module) -> nn.Module:
    """The `MLEmbedModel` inside a (possibly wrapped) SentenceTransformer, or a clear error on the stock path."""
    from mlembed.st import elastic_module

    model = _unwrap(model)
    try:
        return elastic_module(model)
    except (ValueError, TypeError, IndexError, KeyError) as err:
        raise ValueError(
            "MLEmbed3DLoss trains the elastic ML-Embed model, but this SentenceTransformer does not wrap one: "
            "load it with SentenceTransformer(path, trust_remote_code=True) or mlembed.st.load(path), not with "
            f"stock code ({err})"
        ) from err


@contextlib.contextmanager
def _hidden_states_kept(elastic: nn.Module) -> Iterator[None]:
    """sentence-transformers keeps `hidden_states` as `all_layer_embeddings` only while the config asks for them;
    set for this call only, so a later save does not write it into the model's config."""
    before = elastic.config.output_hidden_states
    elastic.config.output_hidden_states = True
    try:
        yield
    finally:
        elastic.config.output_hidden_states = before


class MLEmbed3DLoss(nn.Module):
    def __init__(
        self,
        model: nn.Module,
        temperature: float = 0.05,
        mel: bool = True,
        mll: bool = True,
        mrl: bool = True,
        gather_across_devices: bool = True,
        mask_duplicates: bool = True,
        in_batch: bool = True,
        teacher: nn.Module | None = None,
        kd_weight: float = 0.0,
        generator: torch.Generator | None = None,
        dim_weights: dict[int, float] | None = None,
        exit_weights: dict[int, float] | None = None,
        self_distill: float = 0.0,
        rank_weights: dict[int, float] | None = None,
    ) -> None:
        """The ML-Embed training loss (3D Matryoshka Learning) for an elastic ML-Embed SentenceTransformer.

        Each step draws one MEL rank k (probability k / sum of `config.mel_ranks`, or by `rank_weights`; the same
        on every process) and embeds every column once at that rank, returning the pooled embedding of every MLL
        exit layer (`config.exit_layers`). For every exit and every MRL dim (`config.matryoshka_dims`) the
        embeddings are cut to their first d' values and re-normalised; an in-batch InfoNCE (each anchor against the
        positives of the batch) and a hard-negative InfoNCE (each anchor against its positive and its own negatives)
        are added with the MRL weight of d', and the exits are averaged.

        Formula:
            loss = 1/|E| sum_{l in E} sum_{d' in D} w(d') [L_in(l, d') + L_hard(l, d')],  all at rank k ~ k / sum(R)

            L_in(l, d')   = -1/B sum_i log( exp(s(q_i, p_i)/t) / sum_j exp(s(q_i, p_j)/t) )
            L_hard(l, d') = -1/B sum_i log( exp(s(q_i, p_i)/t) / (exp(s(q_i, p_i)/t) + sum_n exp(s(q_i, n_in)/t)) )
            w(d') = 1 / (n(d') sqrt(d / d')),  n(d') = position of d' in D sorted descending (1-based)

            s = cosine similarity of the exit-l embeddings cut to d' dims; j runs over the positives of all
            processes when `gather_across_devices`; E = exit layers, D = MRL dims, R = MEL ranks.

        Args:
            model: a SentenceTransformer wrapping the elastic `MLEmbedModel` (`trust_remote_code=True` or
                `mlembed.st.load`); a stock-loaded one raises a `ValueError`.
            temperature: a temperature: cosine similarities are divided by it (sentence-transformers'
                `scale` = 1 / temperature, so 0.05 is `MultipleNegativesRankingLoss(scale=20)`).
            mel: draw a MEL rank per step; `False` always uses the full rank (`config.mel_rank`). Needs a model
                with a factorised embedding.
            mll: average over all `config.exit_layers`; `False` uses only the last layer.
            mrl: sum over all `config.matryoshka_dims`; `False` uses only the full width.
            gather_across_devices: in-batch candidates from all processes, gathered with gradient (the paper's
                setting; a no-op in one process).
            mask_duplicates: identical positives in the (global) batch are not negatives of each other.
            in_batch: add the in-batch term (the paper: retrieval data only). With `False` the data needs at least
                one negative column.
            teacher: a frozen ML-Embed model (or a SentenceTransformer wrapping one) sharing the student's
                tokenizer, distilled from at its own full setting when `kd_weight` > 0.
            kd_weight: weight of the MSE to the teacher's embeddings.
            generator: CPU generator for the rank draw on process 0 (reproducible runs); default: torch's global RNG.
            dim_weights: {MRL dim: weight}; default the paper's w(d').
            exit_weights: {exit layer: weight}; default every exit 1 (the mean over exits).
            self_distill: weight of self-distillation (not in the paper; see `ThreeDObjective`): the model's own full
                setting teaches every exit, dim and rank to score the batch as it does. 0 = off.
            rank_weights: {MEL rank: weight} for every rank of `config.mel_ranks`: P(k) = weight / sum; default
                the paper's P(k) ~ k.

        Requirements:
            1. An ML-Embed model loaded with remote code (the elastic `MLEmbedModel` inside the `Transformer`).
            2. (anchor, positive) pairs or (anchor, positive, negative_1, ..., negative_n) tuples, every row with
               the same number of negatives.

        Inputs:
            +-------------------------------------------------+--------+
            | Texts                                           | Labels |
            +=================================================+========+
            | (anchor, positive) pairs                        | none   |
            +-------------------------------------------------+--------+
            | (anchor, positive, negative) triplets           | none   |
            +-------------------------------------------------+--------+
            | (anchor, positive, negative_1, ..., negative_n) | none   |
            +-------------------------------------------------+--------+

        Recommendations:
            - Train with ``dataloader_drop_last=True`` on several processes (the gather needs equal batches).

        Relations:
            - With ``mel=False, mll=False`` and pairs only it equals ``MatryoshkaLoss(MultipleNegativesRankingLoss)``
              with the ML-Embed MRL weights.
            - ``mlembed.losses.ThreeDObjective`` computes the same loss from embeddings; ``MLEmbedTrainer`` optimises
              it too, with the same defaults.

        References:
            - Zhang et al., "ML-Embed: Inclusive and Efficient Embeddings for a Multilingual World", ICML 2026.
            - Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022.

        Example:
            ::

                from datasets import Dataset
                from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer

                from mlembed.losses import MLEmbed3DLoss

                model = SentenceTransformer("ml-embed/0.6b", trust_remote_code=True)
                train_dataset = Dataset.from_dict({
                    "anchor": ["It's nice weather outside today.", "He drove to work."],
                    "positive": ["It's so sunny.", "He took the car to the office."],
                    "negative": ["It's raining hard.", "He stayed at home."],
                })
                loss = MLEmbed3DLoss(model)

                trainer = SentenceTransformerTrainer(model=model, train_dataset=train_dataset, loss=loss)
                trainer.train()
        """
        super().__init__()
        config = _elastic_model(model).config
        if mel and config.mel_rank is None:
            raise ValueError(
                "mel=True needs a factorised token embedding, but this model has none (config.mel_rank=None); "
                "pass mel=False"
            )
        self.model = model
        self.mel, self.mll, self.mrl, self.in_batch = mel, mll, mrl, in_batch
        self.teacher = _teacher_module(teacher) if teacher is not None else None
        self.objective = ThreeDObjective.from_config(
            config,
            mel=mel,
            mll=mll,
            mrl=mrl,
            temperature=temperature,
            gather=gather_across_devices,
            mask_duplicates=mask_duplicates,
            kd_weight=kd_weight,
            generator=generator,
            weights=dim_weights,
            exit_weights=exit_weights,
            self_distill=self_distill,
            rank_weights=rank_weights,
        )
        if kd_weight > 0 and self.teacher is None:
            raise ValueError("kd_weight > 0 needs a teacher (a frozen ML-Embed model or a SentenceTransformer of one)")
        self.full_rank: int | None = config.mel_rank
        self.num_layers = int(config.num_hidden_layers)
        self.last_rank: int | None = None  # the MEL rank of the latest step, for inspection

    @property
    def temperature(self) -> float:
        return self.objective.temperature

    @property
    def scale(self) -> float:
        """sentence-transformers' name for 1 / temperature."""
        return 1.0 / self.objective.temperature

    def embed(self, batch: dict[str, Tensor], rank: int | None, layers: int | None = None) -> dict[int, Tensor]:
        """{exit layer: pooled un-normalised full-width embeddings} of a flat batch at MEL rank `rank` (None = full),
        through the SentenceTransformer as the trainer holds it: every exit of one full-depth pass, or exit `layers`
        alone from a pass at that depth (its exit module applied).

        Shapes:
            batch["input_ids"]: (R, T) -> {l: (R, d)}
        """
        elastic = _elastic_model(self.model)
        exits = [layers] if layers is not None else self.objective.exits or [self.num_layers]
        depth = self.num_layers if layers is None else layers
        settings = {"layers": depth, "rank": rank if rank is not None else self.full_rank, "exits": exits}
        with _hidden_states_kept(elastic):
            states = self.model({**batch, **settings})["all_layer_embeddings"]  # per exit, increasing: (R, T, d)
        return {l: elastic.pool(h, batch["attention_mask"]) for l, h in zip(exits, states)}

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        """The 3D-ML loss of one batch; `labels` are unused (contrastive columns carry no labels)."""
        features = list(sentence_features)
        if len(features) < 2:
            raise ValueError(
                f"MLEmbed3DLoss needs (anchor, positive[, negative_1, ...]) columns, got {len(features)} column(s)"
            )
        batch = stack_columns(features)
        total, _, rank = self.objective.step(
            self.embed, batch, len(features), use_in_batch=self.in_batch, teacher=self.teacher
        )
        self.last_rank = rank if rank is not None else self.full_rank
        return total

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.objective.temperature,
            "mel": self.mel,
            "mll": self.mll,
            "mrl": self.mrl,
            "gather_across_devices": self.objective.gather,
            "mask_duplicates": self.objective.mask_duplicates,
            "in_batch": self.in_batch,
            "kd_weight": self.objective.kd_weight,
            "self_distill": self.objective.self_distill,
            "dim_weights": self.objective.weights,
            "exit_weights": self.objective.exit_weights,
            "rank_weights": self.objective.rank_weights,
            "mel_ranks": self.objective.mel_ranks or [self.full_rank],
            "exit_layers": self.objective.exits,
            "matryoshka_dims": self.objective.dims,
        }

    @property
    def citation(self) -> str:
        return CITATION


def _teacher_module(teacher: nn.Module) -> nn.Module:
    """The frozen ML-Embed model to distil from: as given, or the one inside a SentenceTransformer."""
    if not hasattr(teacher, "resolve_axes"):
        teacher = _elastic_model(teacher)
    return teacher.eval().requires_grad_(False)
