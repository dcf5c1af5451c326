"""`MLEmbed3DLoss`: 3D Matryoshka Learning (MEL ranks, MLL exits, MRL dims) as a sentence-transformers loss.

`SentenceTransformerTrainer` users train the elastic model with it exactly as with `MultipleNegativesRankingLoss`.
Design choices:

* One MEL rank per step (`sample_mel_rank`, drawn on process 0 and shared), the same for every column.
* The columns run through the SentenceTransformer as the trainer holds it (a DDP / FSDP wrapper included, so
  gradients are synchronised), with `exits` and the rank as extra features: sentence-transformers' `Transformer`
  module forwards them to the `MLEmbedModel`, and with `config.output_hidden_states` it keeps the exits' token
  states (`hidden_states`) as `all_layer_embeddings`. They are pooled with the model's own pooling
  (`config.pooling`, what the Hub folder's `Pooling` module mirrors).
* The anchors run in one forward; the candidate columns (positive, negatives) in one more when sentence-transformers
  can merge them (the same rule as its own losses), else one forward each.
* The loss math is `ThreeDMatryoshkaLoss` (in-batch + hard negatives, MRL weights, mean over exits); nothing is
  recomputed here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from mlembed import CITATION
from mlembed.losses.matryoshka import ThreeDMatryoshkaLoss, sample_mel_rank

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


def _merge_columns(features: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The candidate columns as one padded batch (sentence-transformers' own rule), or None to embed them apart."""
    if len(features) < 2:
        return None
    try:
        from sentence_transformers.base.losses.merged_forward import merge_feature_batches
    except ImportError:  # an older 6.x without column merging: one forward per column, same result
        return None
    return merge_feature_batches(features)


class MLEmbed3DLoss(nn.Module):
    def __init__(
        self,
        model: nn.Module,
        temperature: float = 0.05,
        mel: bool = True,
        mll: bool = True,
        mrl: bool = True,
        gather_across_devices: bool = False,
        in_batch: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        """The ML-Embed training loss (3D Matryoshka Learning) for an elastic ML-Embed SentenceTransformer.

        Each step draws one MEL rank k (probability k / sum of `config.mel_ranks`, the same on every process) and
        embeds every column once at that rank, returning the pooled embedding of every MLL exit layer
        (`config.exit_layers`). For every exit and every MRL dim (`config.matryoshka_dims`) the embeddings are cut
        to their first d' values and re-normalised; an in-batch InfoNCE (each anchor against the positives of the
        batch) and a hard-negative InfoNCE (each anchor against its positive and its own negatives) are added with
        the MRL weight of d', and the exits are averaged.

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
            gather_across_devices: in-batch candidates from all processes, gathered with gradient.
            in_batch: add the in-batch term (the paper: retrieval data only). With `False` the data needs at least
                one negative column.
            generator: CPU generator for the rank draw on process 0 (reproducible runs); default: torch's global RNG.

        Requirements:
            1. An ML-Embed model loaded with remote code (the elastic `MLEmbedModel` inside the `Transformer`).
            2. Sets `config.output_hidden_states = True` on the elastic model (it only adds the exits' states
               to outputs that ask for exits).
            3. (anchor, positive) pairs or (anchor, positive, negative_1, ..., negative_n) tuples, every row with
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
            - Use ``BatchSamplers.NO_DUPLICATES``: a duplicate positive in the batch would count as a negative.
            - Train with ``dataloader_drop_last=True`` when ``gather_across_devices`` (equal batches per process).

        Relations:
            - With ``mel=False, mll=False`` and pairs only it equals ``MatryoshkaLoss(MultipleNegativesRankingLoss)``
              with the ML-Embed MRL weights.
            - ``mlembed.losses.ThreeDMatryoshkaLoss`` / ``three_d_loss`` compute the same loss from embeddings (the
              ML-Embed trainer uses them directly).

        References:
            - Zhang et al., "ML-Embed: Inclusive and Efficient Embeddings for a Multilingual World", ICML 2026.
            - Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022.

        Example:
            ::

                from datasets import Dataset
                from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer

                from mlembed.losses.st_loss import MLEmbed3DLoss

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
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 (scale = 1 / temperature), got {temperature}")
        config = _elastic_model(model).config
        if mel and config.mel_rank is None:
            raise ValueError(
                "mel=True needs a factorised token embedding, but this model has none (config.mel_rank=None); "
                "pass mel=False"
            )
        self.model = model
        self.temperature, self.mel, self.mll, self.mrl = temperature, mel, mll, mrl
        self.gather_across_devices, self.in_batch, self.generator = gather_across_devices, in_batch, generator
        self.mel_ranks = list(config.mel_ranks) if config.mel_rank is not None else []
        self.full_rank: int | None = config.mel_rank
        self.num_layers = int(config.num_hidden_layers)
        self.loss_fn = ThreeDMatryoshkaLoss.from_config(
            config, mrl=mrl, mll=mll, temperature=temperature, gather=gather_across_devices
        )
        self.last_rank: int | None = None  # the MEL rank of the latest step, for inspection

    @property
    def scale(self) -> float:
        """sentence-transformers' name for 1 / temperature."""
        return 1.0 / self.temperature

    def sample_rank(self) -> int | None:
        """This step's MEL rank: drawn (same on all processes) with `mel`, else the full rank (None without MEL)."""
        return sample_mel_rank(self.mel_ranks, self.generator) if self.mel else self.full_rank

    def embed_exits(self, sentence_features: list[dict[str, Any]], rank: int | None) -> list[dict[int, Tensor]]:
        """Per column, {exit layer: pooled un-normalised full-width embeddings}, all at MEL rank `rank`.

        Shapes:
            sentence_features[c]["input_ids"]: (B, T_c) -> [{l: (B, d)} per column]
        """
        elastic = _elastic_model(self.model)
        elastic.config.output_hidden_states = True  # sentence-transformers then keeps the exits' token states
        exits = sorted(self.loss_fn.exits)
        settings = {"layers": self.num_layers, "rank": rank, "exits": exits}
        candidates = sentence_features[1:]
        merged = _merge_columns(candidates)
        batches = [sentence_features[0], merged] if merged is not None else sentence_features
        outputs = []
        for batch in batches:  # through the model as given: a DDP / FSDP wrapper synchronises the gradients
            states = self.model({**batch, **settings})["all_layer_embeddings"]  # per exit (rows, T, d)
            outputs.append({l: elastic.pool(h, batch["attention_mask"]) for l, h in zip(exits, states)})
        if merged is None:
            return outputs
        split = {l: e.unflatten(0, (len(candidates), -1)).unbind(0) for l, e in outputs[1].items()}  # C x (B, d)
        return [outputs[0], *({l: parts[c] for l, parts in split.items()} for c in range(len(candidates)))]

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        """The 3D-ML loss of one batch; `labels` are unused (contrastive columns carry no labels)."""
        features = list(sentence_features)
        if len(features) < 2:
            raise ValueError(
                f"MLEmbed3DLoss needs (anchor, positive[, negative_1, ...]) columns, got {len(features)} column(s)"
            )
        self.last_rank = rank = self.sample_rank()
        columns = self.embed_exits(features, rank)
        exit_q, exit_p = columns[0], columns[1]
        exit_negs = None
        if len(columns) > 2:
            exit_negs = {l: torch.stack([c[l] for c in columns[2:]], dim=1) for l in exit_q}  # (B, N, d)
        total, _ = self.loss_fn(exit_q, exit_p, exit_negs, use_in_batch=self.in_batch)
        return total

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "mel": self.mel,
            "mll": self.mll,
            "mrl": self.mrl,
            "gather_across_devices": self.gather_across_devices,
            "in_batch": self.in_batch,
            "mel_ranks": self.mel_ranks if self.mel else [self.full_rank],
            "exit_layers": self.loss_fn.exits,
            "matryoshka_dims": self.loss_fn.dims,
        }

    @property
    def citation(self) -> str:
        return CITATION
