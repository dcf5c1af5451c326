"""The released ML-Embed family as data: backbone architecture, MEL rank and Hub id per size, and parameter counts.

Why data and not prose: the model cards, the scale tests and the recipe configs all read these entries, so a number
shown anywhere is computed from one place. Counts come from models built on the meta device (no memory, no weights).

Sources and assumptions:
* 0.6B, 1.7B, 4B, 8B, 14B: the public Qwen3 configs (hidden, layers, q / kv heads, head_dim 128, FFN, vocab rows
  151,936, tied embeddings up to 4B, 40,960 positions, rope theta 1e6, RMSNorm eps 1e-6).
* 80M, 160M, 330M: the paper says only "pruned from 0.6B"; their architectures are not public. The entries below are
  OUR ASSUMPTIONS, Qwen3-shaped (head_dim 128, 2:1 grouped-query attention, SwiGLU FFN) and sized so that the total
  with the dense embedding lands near the name. 160M uses hidden 640 because then rank 512 gives ~143M, which fits
  the paper's "140M" (most likely 160M with a rank-512 embedding).
* MEL rank: 512, the paper's setting (0.6B and 8B are reported at 512), wherever the hidden size exceeds it;
  80M (hidden 384) uses 256, the largest power of two that still factorises (a rank must be below the hidden size
  to save parameters).
* Token ids (bos / eos / pad) are left out: they do not change any count, and a converted checkpoint takes them
  from its own config and tokenizer.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from transformers import Qwen3Config

from configuration_mlembed import MLEmbedConfig
from modeling_mlembed import MLEmbedModel

logger = logging.getLogger(__name__)

HUB_ORG = "ml-embed"
QWEN3_VOCAB_ROWS = 151_936  # rows of the embedding matrix in every Qwen3 checkpoint
QWEN3_TOKENIZER_ROWS = 151_669  # len(tokenizer): the rows a token id can reach; the paper counts these
REFERENCE_MAX_SEQ_LENGTH = 1024  # the reference recipe trains every size at 1024 tokens per text


def _qwen3(hidden: int, layers: int, heads: int, kv_heads: int, ffn: int, tied: bool) -> Mapping[str, Any]:
    """Qwen3Config kwargs; the fields every public Qwen3 size shares are filled in here."""
    return MappingProxyType(
        dict(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=128,
            intermediate_size=ffn,
            vocab_size=QWEN3_VOCAB_ROWS,
            tie_word_embeddings=tied,
            max_position_embeddings=40_960,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
            rms_norm_eps=1e-6,
            hidden_act="silu",
            attention_bias=False,
            max_window_layers=layers,
            use_sliding_window=False,
        )
    )


@dataclass(frozen=True)
class ModelSize:
    """One released size: the backbone's Qwen3Config kwargs, its MEL rank and where it lives on the Hub.

    `assumed=True` marks an architecture we chose (not public); cards and docs say so.
    """

    name: str
    backbone: Mapping[str, Any]
    mel_rank: int
    base_model: str
    assumed: bool = False
    note: str = ""

    @property
    def slug(self) -> str:
        """Lower-case name used in file names and Hub ids (`8b`, `0.6b`)."""
        return self.name.lower()

    @property
    def repo_id(self) -> str:
        return f"{HUB_ORG}/{self.slug}"


_ASSUMED = (
    "The paper says only that this size is pruned from Qwen3-0.6B; its architecture is not public, and the one used"
    " here (hidden size, layers, heads, FFN) is our Qwen3-shaped choice sized to land near the name."
)
FAMILY: tuple[ModelSize, ...] = (
    ModelSize("80M", _qwen3(384, 8, 4, 2, 1792, tied=True), 256, "Qwen/Qwen3-0.6B", True, _ASSUMED),
    ModelSize("160M", _qwen3(640, 12, 8, 4, 1792, tied=True), 512, "Qwen/Qwen3-0.6B", True, _ASSUMED),
    ModelSize("330M", _qwen3(1024, 14, 16, 8, 2048, tied=True), 512, "Qwen/Qwen3-0.6B", True, _ASSUMED),
    ModelSize("0.6B", _qwen3(1024, 28, 16, 8, 3072, tied=True), 512, "Qwen/Qwen3-0.6B"),
    ModelSize("1.7B", _qwen3(2048, 28, 16, 8, 6144, tied=True), 512, "Qwen/Qwen3-1.7B"),
    ModelSize("4B", _qwen3(2560, 36, 32, 8, 9728, tied=True), 512, "Qwen/Qwen3-4B"),
    ModelSize("8B", _qwen3(4096, 36, 32, 8, 12288, tied=False), 512, "Qwen/Qwen3-8B"),
    ModelSize("14B", _qwen3(5120, 40, 40, 8, 17408, tied=False), 512, "Qwen/Qwen3-14B"),
)
SIZES: tuple[str, ...] = tuple(size.name for size in FAMILY)
_BY_SLUG = {size.slug: size for size in FAMILY}


def get_size(name: str) -> ModelSize:
    """The family entry by name, case-insensitive (`8B`, `8b`, `ml-embed/8b`)."""
    key = str(name).lower().removeprefix(f"{HUB_ORG}/")
    if key not in _BY_SLUG:
        raise ValueError(f"unknown size {name!r}; choose one of {list(SIZES)}")
    return _BY_SLUG[key]


def size_config(name: str, **axes: Any) -> MLEmbedConfig:
    """The ML-Embed config of a released size (default axes unless `axes` override them)."""
    size = get_size(name)
    axes.setdefault("mel_rank", size.mel_rank)
    axes.setdefault("max_seq_length", REFERENCE_MAX_SEQ_LENGTH)
    return MLEmbedConfig.from_backbone(Qwen3Config(**copy.deepcopy(dict(size.backbone))), **axes)


def _as_config(size_or_config: str | MLEmbedConfig) -> MLEmbedConfig:
    return size_config(size_or_config) if isinstance(size_or_config, str) else size_or_config


def build_on_meta(size_or_config: str | MLEmbedConfig) -> MLEmbedModel:
    """The elastic model on the meta device: true shapes and parameter counts, no memory, no init cost."""
    with torch.device("meta"):
        return MLEmbedModel(_as_config(size_or_config))


def human_count(count: int) -> str:
    """A parameter (or other) count for people: `596.05M`, `1.72B`, `12.30K` (the exact figure goes elsewhere)."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.2f}{suffix}"
    return str(count)


def parameter_counts(size_or_config: str | MLEmbedConfig, tokenizer_rows: int | None = None) -> dict[str, Any]:
    """Parameter counts of the dense backbone and of the model at every nested MEL rank.

    The rank-k embedding is U[:, :k] V[:k]: `rows * k + k * d` parameters. Counts at `vocab_rows` are what a
    checkpoint stores; counts at `tokenizer_rows` (default: the Qwen3 tokenizer length for the released sizes, else
    the vocab rows) are the paper's accounting (rows no token id reaches are left out).

    Returns:
        dict with `vocab_rows`, `tokenizer_rows`, `hidden_size`, `total` (stock backbone, dense embedding, no
        lm_head), `non_embedding`, `dense_embedding` / `dense_embedding_tokenizer`, and per rank k (descending):
        `mel_embedding[k]` / `mel_embedding_tokenizer[k]`, `mel_total[k]` (non-embedding + rank-k embedding) and
        `mel_embedding_share[k]` (embedding / total at rank k). The MEL entries are empty without MEL.
    """
    if tokenizer_rows is None:
        tokenizer_rows = QWEN3_TOKENIZER_ROWS if isinstance(size_or_config, str) else None
    config = _as_config(size_or_config)
    rows, d = int(config.vocab_size), int(config.hidden_size)
    tokenizer_rows = rows if tokenizer_rows is None else int(tokenizer_rows)
    if not 1 <= tokenizer_rows <= rows:
        raise ValueError(f"tokenizer_rows must lie in 1..{rows} (the vocab rows), got {tokenizer_rows}")
    dense_config = copy.deepcopy(config)
    dense_config.mel_rank, dense_config.mel_ranks = None, None
    dense_config.exit_modules = None  # the stock backbone; `mel_total` leaves them out too (full depth runs none)
    dense_model = build_on_meta(dense_config)  # the stock backbone with its dense embedding
    total = dense_model.num_parameters()
    non_embedding = total - dense_model.get_input_embeddings().weight.numel()
    dense = total - non_embedding
    ranks = sorted(config.mel_ranks or [], reverse=True)
    mel_model = build_on_meta(config) if ranks else None
    mel_total = {k: mel_model.num_parameters(rank=k) for k in ranks}
    mel_embedding = {k: mel_total[k] - non_embedding for k in ranks}
    return {
        "vocab_rows": rows,
        "tokenizer_rows": tokenizer_rows,
        "hidden_size": d,
        "total": total,
        "non_embedding": non_embedding,
        "dense_embedding": dense,
        "dense_embedding_tokenizer": tokenizer_rows * d,
        "dense_embedding_share": dense / total,
        "mel_embedding": mel_embedding,
        "mel_embedding_tokenizer": {k: tokenizer_rows * k + k * d for k in ranks},
        "mel_total": mel_total,
        "mel_embedding_share": {k: mel_embedding[k] / mel_total[k] for k in ranks},
    }
