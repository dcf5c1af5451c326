"""The 3D Matryoshka Learning objective: contrastive losses over every MLL exit and MRL dim at one MEL rank per step.

The model returns, from ONE forward pass, the pooled un-normalised full-width embedding of every exit layer
(`model(..., exits=...).exit_embeddings`). `three_d_loss` cuts each to every MRL prefix, re-normalises it
(`truncate_embeddings`), and combines the contrastive losses of `mlembed.losses.contrastive` with the MRL weights;
the MEL axis is a rank drawn once per step (`sample_mel_rank`) and passed to the model as `rank=`. Ablations are
data, not code paths: MRL off = `dims=[hidden_size]`; MLL off = only the last exit; MEL off = the full rank.

`ThreeDObjective` holds those settings for a model and runs a whole step (`step`); the Trainer and the
sentence-transformers loss are thin adapters over it, so both optimise exactly the same objective.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mlembed import distributed
from mlembed.losses.axes import (
    check_dims,
    check_exit_dims,
    check_exit_weights,
    check_exits,
    check_rank_weights,
    sample_mel_rank,
)
from mlembed.losses.columns import as_negatives, embed_by_side, flat_columns, side_batches, split_columns
from mlembed.losses.contrastive import (
    hard_negative_infonce,
    in_batch_targets,
    masked_infonce,
    passage_ids_from_tokens,
    upcast,
)
from mlembed.losses.distill import self_distill_exit, self_teacher_logits, teacher_distill_loss
from modeling_mlembed import truncate_embeddings

logger = logging.getLogger(__name__)
_RENAMED = {"teacher": "teacher_embeddings", "self_teacher": "self_teacher_embeddings"}  # old keyword -> new


def _renamed_keywords(function: Callable) -> Callable:
    """Calls with the old keywords still work, with a DeprecationWarning: embeddings were passed as `teacher=` /
    `self_teacher=` before `teacher` came to mean only the teacher model (`step`, the Trainer, the ST loss)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for old, new in _RENAMED.items():
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"{function.__qualname__}: give {new}= only ({old}= is its old name)")
                warnings.warn(f"{function.__qualname__}({old}=) is now {new}=", DeprecationWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
        return function(*args, **kwargs)

    return wrapper


def _dim_losses(
    q: torch.Tensor,
    p: torch.Tensor,
    negs: torch.Tensor | None,
    candidates: torch.Tensor | None,
    targets: tuple[torch.Tensor, torch.Tensor | None] | None,
    dim: int,
    temperature: float,
) -> dict[str, torch.Tensor]:
    """Unweighted in-batch and hard-negative losses of one exit at the prefix `dim` (sliced, re-normalised).

    Shapes:
        q, p: (B, d); negs: (B, N, d) or None; candidates: (W * B, d) or None -> {kind: ()}
    """
    losses = {}
    q_d = truncate_embeddings(q, dim)  # (B, d')
    if candidates is not None:
        c_d = truncate_embeddings(candidates, dim)  # (W * B, d')
        losses["in_batch"] = masked_infonce(q_d @ c_d.T / temperature, *targets)
    if negs is not None:
        p_d, n_d = truncate_embeddings(p, dim), truncate_embeddings(negs, dim)  # (B, d'), (B, N, d')
        losses["hard_negative"] = hard_negative_infonce(q_d, p_d, n_d, temperature)
    return losses


@_renamed_keywords
def three_d_loss(
    exit_q: Mapping[int, torch.Tensor],
    exit_p: Mapping[int, torch.Tensor],
    dims: Sequence[int],
    exit_negs: Mapping[int, torch.Tensor] | None = None,
    weights: Mapping[int, float] | None = None,
    temperature: float = 0.05,
    use_in_batch: bool = True,
    use_hard_negatives: bool = True,
    passage_ids: torch.Tensor | None = None,
    gather: bool = True,
    exits: Sequence[int] | None = None,
    teacher_embeddings: Sequence[torch.Tensor | None] | None = None,
    kd_weight: float = 0.0,
    exit_weights: Mapping[int, float] | None = None,
    self_distill: float = 0.0,
    self_teacher_embeddings: Sequence[torch.Tensor | None] | None = None,
    exit_dims: Mapping[int, Sequence[int]] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The ML-Embed training loss over the depth (MLL) and output (MRL) axes from one forward pass.

    For every exit l and dim d': slice the first d' values of the pooled embeddings, L2-normalise, add the in-batch
    InfoNCE (retrieval batches) and the hard-negative InfoNCE, weighted by the MRL weight of d'. Distillation, when
    a teacher is given, adds `kd_weight` x MSE of the exit's full-width un-normalised embeddings to the teacher's
    first d dims. The sum over exits is divided by the number of exits (all exits weigh the same; `exit_weights`
    changes that). Half-precision embeddings are upcast to fp32 here: similarities divided by 0.05 lose too much in
    bf16.

    Self-distillation (`self_distill` > 0, not in the paper): the model's own full setting (the deepest exit, full
    width, full MEL rank), detached, teaches every other setting to rank the step's candidates as it does (KL of the
    score distributions, `score_distill_kl`). The teacher is `self_teacher_embeddings` (the full rank's, from a second
    forward when the step's rank is lower) or, by default, the deepest exit of this pass at its full width, which is
    then not its own student.

    Formula:
        loss = 1/sum_l a(l) sum_{l in E} a(l) [ sum_{d' in D} w(d') (L_inbatch(l, d') + L_hard(l, d'))
               + kd_weight L_kd(l) ] + self_distill mean_{(l, d') != teacher} KL(p_teacher || p(l, d')),
        w(d') = 1 / (n(d') sqrt(d / d')), n(d') = position of d' in D sorted descending (1-based), a(l) = 1 by default.

    Args:
        exit_q, exit_p: {exit layer: pooled un-normalised full-width embeddings} of queries / positives, as the
            model's `exit_embeddings` (`model(..., exits=True)`).
        dims: MRL dims (e.g. `config.matryoshka_dims`); `[d]` alone = MRL off.
        exit_negs: {exit layer: hard negatives}, each (B, N, d) or (B * N, d) (row i*N + j = negative j of query i,
            i.e. the negatives embedded as one flat batch in query order); needed when `use_hard_negatives`.
        weights: {dim: weight}; default `mrl_weights(dims, d)`.
        temperature: divides cosine similarities (a temperature; sentence-transformers' scale = 1 / temperature).
        use_in_batch: add the in-batch loss (the paper: retrieval datasets only).
        use_hard_negatives: add the hard-negative loss (the paper: every batch).
        passage_ids: (B,) int ids of the positives; duplicates are not negatives of each other (see
            `in_batch_infonce`).
        gather: in-batch candidates from all processes (gathered with gradient, once per exit).
        exits: subset of the exit layers to use; default all given. `[last layer]` alone = MLL off.
        teacher_embeddings: `(teacher_q, teacher_p, teacher_negs)` embeddings of a frozen teacher at its own full
            settings
            (width D >= d, un-normalised, e.g. its `exit_embeddings[its last layer]`), compared with every exit.
        kd_weight: weight of the distillation term; 0 skips it.
        exit_weights: {exit layer: weight} for the chosen exits (missing ones weigh 1); default all 1 (the paper).
        self_distill: weight of the self-distillation term; 0 skips it.
        self_teacher_embeddings: `(q, p, negs)` full-width embeddings of the full setting for self-distillation
            (detached
            here); default the deepest chosen exit of `exit_q`, `exit_p`, `exit_negs`.
        exit_dims: {exit layer: dims} to train only those (exit, dim) pairs at the listed exits, each with weight 1
            (Starbucks' diagonal pairs, arXiv 2410.13230); unlisted exits train every dim of `dims`.

    Inputs:
        +-----------+-------------------------------+-----------------------------------------------+
        | name      | value shape                   | content                                       |
        +===========+===============================+===============================================+
        | exit_q    | {l: (B, d)}                   | queries, per exit layer                       |
        | exit_p    | {l: (B, d)}                   | positives, per exit layer                     |
        | exit_negs | {l: (B, N, d) or (B * N, d)}  | hard negatives, per exit layer                |
        | teacher_e.| ((B, D), (B, D), (B, N, D))   | teacher embeddings (optional)                 |
        +-----------+-------------------------------+-----------------------------------------------+

    Returns:
        (total loss, components): components are detached, *unweighted* losses keyed
        `exit{l}/dim{d'}/in_batch`, `exit{l}/dim{d'}/hard_negative`, `exit{l}/kd` and `exit{l}/dim{d'}/self_kd`, for
        logging.

    Shapes:
        exit_q[l], exit_p[l]: (B, d); exit_negs[l]: (B, N, d) or (B * N, d) -> total: ()

    References:
        Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022; Zhang et al., "ML-Embed", ICML 2026;
        self-distillation: Zhang et al., "Be Your Own Teacher", arXiv 1905.08094 (exits), Hinton et al., arXiv
        1503.02531 (soft targets).

    Example:
        >>> import torch
        >>> q = {2: torch.randn(4, 16), 4: torch.randn(4, 16)}
        >>> p = {2: torch.randn(4, 16), 4: torch.randn(4, 16)}
        >>> n = {2: torch.randn(4 * 3, 16), 4: torch.randn(4 * 3, 16)}
        >>> total, parts = three_d_loss(q, p, dims=[16, 8], exit_negs=n)
        >>> sorted(parts)[:2]
        ['exit2/dim16/hard_negative', 'exit2/dim16/in_batch']
    """
    if not (use_in_batch or use_hard_negatives or (teacher_embeddings is not None and kd_weight > 0)):
        raise ValueError(
            "nothing to compute: enable use_in_batch, use_hard_negatives, or give teacher_embeddings and kd_weight > 0"
        )
    if use_hard_negatives and exit_negs is None:
        raise ValueError("use_hard_negatives=True needs exit_negs; pass use_hard_negatives=False for pairs only")
    if temperature <= 0 or kd_weight < 0 or self_distill < 0:
        raise ValueError(
            f"temperature must be > 0 and kd_weight, self_distill >= 0, got {temperature}, {kd_weight}, {self_distill}"
        )
    chosen = check_exits(exit_q, exit_p, exit_negs if use_hard_negatives else None, exits)
    batch, width = exit_q[chosen[0]].shape
    weights_by_dim = check_dims(dims, width, weights)
    pairs = check_exit_dims(exit_dims, chosen, width, weights_by_dim)
    by_exit = check_exit_weights(exit_weights, chosen)
    targets = None
    if use_in_batch:  # labels and duplicate mask shared by every exit and dim
        targets = in_batch_targets(batch, passage_ids, gather=gather, device=exit_q[chosen[0]].device)
    teacher_logits, own_teacher = None, self_teacher_embeddings is None
    if self_distill > 0:
        deepest = chosen[-1]
        source = self_teacher_embeddings or (
            exit_q[deepest],
            exit_p[deepest],
            exit_negs[deepest] if use_hard_negatives else None,
        )
        teacher_logits = self_teacher_logits(source, batch, use_in_batch, gather, temperature)
    exclude = None
    if teacher_logits is not None and targets is not None and targets[1] is not None:  # duplicates, then negatives
        exclude = F.pad(targets[1], (0, teacher_logits.shape[1] - targets[1].shape[1]), value=False)
    total, parts, distilled = torch.zeros((), device=exit_q[chosen[0]].device), {}, []
    for layer in chosen:
        q, p = upcast(exit_q[layer]), upcast(exit_p[layer])  # similarities / temperature need fp32 under bf16
        if q.shape != (batch, width) or p.shape != (batch, width):
            raise ValueError(
                f"exit {layer}: queries and positives must be ({batch}, {width}), got "
                f"{tuple(q.shape)} and {tuple(p.shape)}"
            )
        negs = upcast(as_negatives(exit_negs[layer], batch, width)) if use_hard_negatives else None  # (B, N, d)
        candidates = None
        if use_in_batch:  # one differentiable gather per exit, sliced per dim below
            candidates = distributed.gather_with_grad(p, check_shapes=layer == chosen[0]) if gather else p
        for dim, weight in pairs[layer].items():
            for kind, loss in _dim_losses(q, p, negs, candidates, targets, dim, temperature).items():
                parts[f"exit{layer}/dim{dim}/{kind}"] = loss.detach()
                total = total + by_exit[layer] * weight * loss
        if teacher_embeddings is not None and kd_weight > 0:
            loss = teacher_distill_loss(q, p, negs, teacher_embeddings)
            parts[f"exit{layer}/kd"] = loss.detach()
            total = total + by_exit[layer] * kd_weight * loss
        if teacher_logits is not None:
            skip = width if own_teacher and layer == chosen[-1] else None
            student = (q, p, negs, candidates)
            for dim, loss in self_distill_exit(
                student, teacher_logits, pairs[layer], exclude, temperature, skip
            ).items():
                parts[f"exit{layer}/dim{dim}/self_kd"] = loss.detach()
                distilled.append(loss)
    total = total / sum(by_exit.values())
    if distilled:
        total = total + self_distill * torch.stack(distilled).mean()
    return total, parts


class ThreeDObjective(nn.Module):
    """The ML-Embed training objective on per-exit embeddings: the one implementation behind both trainers.

    It holds the three axes of a model (MEL ranks to draw from, MLL exits, MRL dims and weights) and the contrastive
    settings, and computes `three_d_loss` from the exits of a flat batch of columns
    `[queries; positives; negative_1; ...; negative_N]` (each column B rows), every exit from one pass at full depth
    (one for the queries, one for the passage side, each at its own width: `side_batches`). It is not a
    sentence-transformers loss (those take a model): the front ends are `mlembed.train.MLEmbedTrainer` and
    `mlembed.losses.MLEmbed3DLoss`, which only differ in how they run the model (`step(embed, batch, ...)`).

    Defaults are the paper's: temperature 0.05, in-batch negatives gathered from all processes with gradient, hard
    negatives on every batch, MRL weights 1 / (n sqrt(d / d')), exits averaged, one MEL rank per step with P(k) ~ k.
    On top of the paper: identical positives in a batch are not used as negatives of each other (`mask_duplicates`,
    the fix of a defect of the reference code), optional distillation from a frozen teacher, exit weights, and
    optional self-distillation: the model's own full setting (deepest exit, full width, full MEL rank; detached)
    teaches every exit, dim and rank to rank the step's candidates as it does (`three_d_loss`). When the step's rank
    is below the full rank, the teacher comes from a second forward pass at the full rank without gradients.

    Args:
        dims: MRL dims (`[d]` alone = MRL off).
        exits: MLL exit layers (`[L]` alone = MLL off); `None` = every exit given to `forward`.
        mel_ranks: nested MEL ranks drawn per step; `None` = no MEL axis (the model's full rank, or a dense model).
        weights: {dim: weight}; default `mrl_weights(dims)`.
        temperature: divides cosine similarities (a temperature; sentence-transformers' `scale` = 1 / temperature).
        gather: in-batch candidates from all processes (differentiable all-gather; a no-op in one process).
        mask_duplicates: identical positive passages (same tokens) are not negatives of each other.
        kd_weight: weight of the MSE to a teacher's embeddings (0 = no distillation).
        generator: CPU generator of the rank draw on process 0 (reproducible runs).
        exit_weights: {exit layer: weight}; default every exit 1 (the paper: the mean over exits).
        self_distill: weight of the self-distillation term (0 = off, the paper).
        separate_exits: the second stage of the two-stage recipe: each exit runs in its own pass at `layers=k` (so
            its exit module applies) and the self-distillation teacher is the full setting's own pass without
            gradients; needs `full_depth`.
        full_depth: the model's number of layers (the teacher's depth with `separate_exits`).
        exit_dims: {exit layer: dims}: train only those dims at those exits (Starbucks-style diagonal pairs).
        rank_weights: {MEL rank: weight}, every rank of `mel_ranks`: P(k) = weight / sum; default the paper's
            P(k) ~ k (a second stage can weight the small ranks its cut settings use).

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> config = SimpleNamespace(matryoshka_dims=[8, 16], exit_layers=[2, 4], hidden_size=16,
        ...                          num_hidden_layers=4, mel_rank=None, mel_ranks=None)
        >>> objective = ThreeDObjective.from_config(config, mll=False)  # only the last exit
        >>> exits = {4: torch.randn(3 * 4, 16)}  # columns: 4 queries, 4 positives, 4 negatives
        >>> total, parts = objective(exits, num_columns=3)
        >>> sorted(parts)
        ['exit4/dim16/hard_negative', 'exit4/dim16/in_batch', 'exit4/dim8/hard_negative', 'exit4/dim8/in_batch']
    """

    def __init__(
        self,
        dims: Sequence[int],
        exits: Sequence[int] | None = None,
        mel_ranks: Sequence[int] | None = None,
        weights: Mapping[int, float] | None = None,
        temperature: float = 0.05,
        gather: bool = True,
        mask_duplicates: bool = True,
        kd_weight: float = 0.0,
        generator: torch.Generator | None = None,
        exit_weights: Mapping[int, float] | None = None,
        self_distill: float = 0.0,
        separate_exits: bool = False,
        full_depth: int | None = None,
        exit_dims: Mapping[int, Sequence[int]] | None = None,
        rank_weights: Mapping[int, float] | None = None,
    ) -> None:
        super().__init__()
        if separate_exits and (exits is None or full_depth is None or max(exits) >= full_depth):
            raise ValueError(
                f"separate_exits needs the exits (below the full depth) and full_depth, got {exits} and {full_depth}"
            )
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 (the paper: 0.05; scale = 1 / temperature), got {temperature}")
        if kd_weight < 0 or self_distill < 0:
            raise ValueError(f"kd_weight and self_distill must be >= 0, got {kd_weight} and {self_distill}")
        self.dims, self.exits, self.weights = list(dims), None if exits is None else sorted(set(exits)), weights
        self.mel_ranks = sorted(set(mel_ranks)) if mel_ranks else None
        if rank_weights and not self.mel_ranks:
            raise ValueError(f"rank_weights {dict(rank_weights)} need the MEL axis (mel_ranks), which is off")
        self.rank_weights = check_rank_weights(rank_weights, self.mel_ranks) if rank_weights else None
        self.temperature, self.gather, self.mask_duplicates = temperature, gather, mask_duplicates
        self.kd_weight, self.generator = kd_weight, generator
        self.exit_weights = {int(k): float(v) for k, v in (exit_weights or {}).items()} or None
        self.self_distill = self_distill
        self.separate_exits, self.full_depth = separate_exits, full_depth
        self.exit_dims = {int(k): [int(d) for d in v] for k, v in (exit_dims or {}).items()} or None

    @classmethod
    def from_config(
        cls, config: Any, mel: bool = True, mll: bool = True, mrl: bool = True, **kwargs: Any
    ) -> ThreeDObjective:
        """The axes of a model config; `mel=False` / `mll=False` / `mrl=False` are the ablations (full rank, last
        layer, full width). `exit_weights` of exits an ablation leaves out are dropped."""
        dims = list(config.matryoshka_dims) if mrl else [int(config.hidden_size)]
        exits = list(config.exit_layers) if mll else [int(config.num_hidden_layers)]
        mel_ranks = list(config.mel_ranks) if mel and getattr(config, "mel_rank", None) is not None else None
        if kwargs.get("separate_exits"):  # the second stage trains the exits that own a module
            exits = list((getattr(config, "exit_modules", None) or {}).get("exits", []))
            if not exits:
                raise ValueError("separate_exits trains exit modules, but the model has none (config.exit_modules)")
        if kwargs.get("exit_weights"):
            kwargs["exit_weights"] = {int(k): v for k, v in kwargs["exit_weights"].items() if int(k) in exits}
        kwargs.setdefault("full_depth", int(config.num_hidden_layers))
        return cls(dims=dims, exits=exits, mel_ranks=mel_ranks, **kwargs)

    def sample_rank(self) -> int | None:
        """This step's MEL rank (`sample_mel_rank`, the same on every process); `None` (full rank) without MEL."""
        return sample_mel_rank(self.mel_ranks, self.generator, self.rank_weights) if self.mel_ranks else None

    def step(
        self,
        embed: Callable[[dict[str, torch.Tensor], int | None], Mapping[int, torch.Tensor]],
        batch: Mapping[str, torch.Tensor],
        num_columns: int,
        use_in_batch: bool = True,
        teacher: Any = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], int | None]:
        """One training step's loss: draw the rank, embed the flat batch (`side_batches`: queries and passages in a
        pass of their own width each), mask duplicates, distil, combine.

        Args:
            embed: `embed(batch, rank, layers=None)` runs the (possibly wrapped) model on rows of the flat batch at MEL
                rank `rank` and returns {exit layer: (R, d) pooled un-normalised embeddings}: of the exits
                `self.exits` from one full-depth pass, or with `layers=k` of exit k alone from a depth-k pass.
            batch: `input_ids` and `attention_mask` (C * B, T) of the columns, stacked (`stack_columns`).
            num_columns: C = 2 + the number of negatives per query.
            use_in_batch: add the in-batch loss (the paper: retrieval datasets only).
            teacher: a frozen model whose `forward(input_ids=, attention_mask=)` returns `.embeddings` (an ML-Embed
                model at its own full setting); used when `kd_weight` > 0.

        Returns:
            (total loss, detached components, the rank drawn).
        """
        rank = self.sample_rank()
        full = None
        passes = side_batches(batch, num_columns)  # every pass of the step embeds these

        def run(rank: int | None, layers: int | None = None) -> dict[int, torch.Tensor]:
            return embed_by_side(embed, passes, rank, layers=layers)

        if self.separate_exits:  # each exit with its own module; the full setting teaches from its own pass
            exits = {k: run(rank, layers=k)[k] for k in self.exits}
            if self.self_distill > 0:
                with torch.no_grad():
                    top = max(self.mel_ranks) if self.mel_ranks else None
                    full = run(top, layers=self.full_depth)[self.full_depth]
        else:
            exits = run(rank)
        if not self.separate_exits and self.self_distill > 0 and rank is not None and rank < max(self.mel_ranks):
            with torch.no_grad():  # the full-rank teacher of this step's (lower) rank
                full = run(max(self.mel_ranks))
            full = full[max(self.exits or full)]
        size = batch["input_ids"].shape[0] // num_columns
        passage_ids = None
        if self.mask_duplicates and use_in_batch:
            passage_ids = passage_ids_from_tokens(
                batch["input_ids"][size : 2 * size], batch["attention_mask"][size : 2 * size]
            )
        teacher_embeddings = None
        if teacher is not None and self.kd_weight > 0:
            with torch.no_grad():
                teacher_embeddings = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            teacher_embeddings = teacher_embeddings.embeddings
        total, parts = self(
            exits,
            num_columns,
            passage_ids=passage_ids,
            use_in_batch=use_in_batch,
            teacher_embeddings=teacher_embeddings,
            self_teacher_embeddings=full,
        )
        return total, parts, rank

    @_renamed_keywords
    def forward(
        self,
        exit_embeddings: Mapping[int, torch.Tensor],
        num_columns: int,
        passage_ids: torch.Tensor | None = None,
        use_in_batch: bool = True,
        teacher_embeddings: torch.Tensor | None = None,
        self_teacher_embeddings: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`three_d_loss` of a flat batch of columns (queries, positives, then every negative column).

        `teacher_embeddings`: a frozen teacher's embeddings of the same columns (distillation, `kd_weight` > 0);
        `self_teacher_embeddings`: the full setting's (self-distillation at a lower step rank), default the deepest
        exit of `exit_embeddings`.

        Shapes:
            exit_embeddings[l]: (C * B, d); passage_ids: (B,); teacher_embeddings, self_teacher_embeddings:
            (C * B, D) -> total: ()
        """
        exit_q, exit_p, exit_negs = split_columns(exit_embeddings, num_columns)
        teacher_columns = None
        if teacher_embeddings is not None and self.kd_weight > 0:
            teacher_columns = flat_columns(teacher_embeddings, num_columns)
        own_columns = (
            flat_columns(self_teacher_embeddings, num_columns)
            if self_teacher_embeddings is not None and self.self_distill
            else None
        )
        return three_d_loss(
            exit_q,
            exit_p,
            self.dims,
            exit_negs=exit_negs,
            weights=self.weights,
            temperature=self.temperature,
            use_in_batch=use_in_batch,
            use_hard_negatives=exit_negs is not None,
            passage_ids=passage_ids,
            gather=self.gather,
            exits=self.exits,
            teacher_embeddings=teacher_columns,
            kd_weight=self.kd_weight,
            exit_weights=self.exit_weights,
            self_distill=self.self_distill,
            self_teacher_embeddings=own_columns,
            exit_dims=self.exit_dims,
        )
