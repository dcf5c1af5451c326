"""Configuration of ML-Embed, a text-embedding model elastic along three nested axes (3D Matryoshka Learning).

ML-Embed (Zhang et al., ICML 2026) wraps a stock `transformers` backbone (Qwen3 first, any decoder or encoder
that `AutoModel` builds) and makes it elastic in:

* parameters (MEL): the token embedding E (vocab x d) is replaced by factors U (vocab x r) and V (r x d),
  usable at any nested sub-rank k <= r;
* depth (MLL): the model may stop after any of the first layers, the final norm applied there;
* output (MRL): nested prefixes of the embedding, re-normalised.

Design choice: the saved `config.json` is the backbone's own (its fields, and in Hub folders its `model_type`,
e.g. `qwen3`) plus the ML-Embed fields and an `auto_map`. Stock code therefore loads a Hub folder as the plain
backbone (compatibility mode) and `trust_remote_code=True` loads this class and the elastic model.

As remote code it runs on whatever transformers its user has, 4.x (e.g. infinity-emb's, which pins
sentence-transformers < 4) as well as 5.x: it imports `PretrainedConfig`, the name both have, and on transformers 4,
where configs are no dataclasses, an `__init__` fills the fields and validates as `__post_init__` does on 5.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from transformers import AutoConfig, PretrainedConfig

DEFAULT_INSTRUCTION = "Given a question, retrieve passages that can help answer the question"
QUERY_TEMPLATE = "Instruct: {instruction}\nQuery: "
MLL_CANDIDATE_EXITS = (1, 2, 4, 8, 16, 24, 32, 40, 48)
POOLING_MODES = ("last_token", "mean", "cls")
AXIS_FIELDS = (
    "backbone_type",
    "mel_rank",
    "mel_ranks",
    "exit_layers",
    "matryoshka_dims",
    "default_layers",
    "default_dim",
    "default_rank",
    "pooling",
    "normalize",
    "prompts",
    "append_eos",
    "max_seq_length",
    "exit_modules",
)
EXIT_MODULE_KINDS = ("lora", "adapter")
EXIT_MODULE_KEYS = ("kind", "exits", "rank", "alpha", "layer_norm", "small_ranks")
SMALL_RANKS_KEYS = ("up_to", "rank", "alpha")
DEFAULT_MAX_SEQ_LENGTH = 512  # for folders that record none (older exports): the common limit of embedding models
# Fields of PretrainedConfig itself that must not be forwarded to the backbone config.
_META_KEYS = ("model_type", "auto_map", "architectures", "transformers_version", "_name_or_path")


def default_mel_ranks(rank: int) -> list[int]:
    """Powers of two from 64 up to `rank`, plus `rank` itself (the nested MEL ranks of the paper)."""
    ranks, k = [], 64
    while k < rank:
        ranks.append(k)
        k *= 2
    return ranks + [rank]


def default_exit_layers(num_layers: int) -> list[int]:
    """Exits {1, 2, 4, 8, 16, 24, 32, 40, 48} that fit in the model, plus the last layer."""
    return sorted({k for k in MLL_CANDIDATE_EXITS if k <= num_layers} | {num_layers})


def default_matryoshka_dims(hidden_size: int) -> list[int]:
    """Powers of two from 8 below `hidden_size`, plus `hidden_size`."""
    dims, k = [], 8
    while k < hidden_size:
        dims.append(k)
        k *= 2
    return dims + [hidden_size]


def default_prompts(instruction: str = DEFAULT_INSTRUCTION) -> dict[str, str]:
    """Query prompt with the ML-Embed instruction template; documents get none."""
    return {"query": QUERY_TEMPLATE.format(instruction=instruction), "document": ""}


def check_mel_rank(rank: Any, vocab_size: int, hidden_size: int) -> int:
    """The MEL rank r, an integer in 1..min(vocab, hidden): the one place its range is checked."""
    max_rank = min(int(vocab_size), int(hidden_size))
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= max_rank:
        raise ValueError(
            f"mel_rank must be an integer in 1..{max_rank} (min(vocab {vocab_size}, hidden {hidden_size})), "
            f"got {rank!r}"
        )
    return rank


def check_max_seq_length(value: Any, max_positions: int | None) -> int:
    """Tokens per text: an integer >= 2 (one token plus the EOS), never above the backbone's position limit."""
    upper = max_positions if max_positions else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 2 or (upper and value > upper):
        allowed = f"2..{upper} (the backbone's max_position_embeddings)" if upper else ">= 2"
        raise ValueError(f"max_seq_length must be an integer in {allowed}, got {value!r}")
    return value


def check_exit_modules(spec: Any, exit_layers: list[int], mel_ranks: list[int] | None = None) -> dict[str, Any]:
    """The `exit_modules` setting, completed (`alpha`) and checked; errors name the allowed keys and values.
    `mel_ranks`: the model's trained MEL ranks (None: no MEL), which `small_ranks.up_to` must be one of."""
    if not isinstance(spec, dict):
        raise ValueError(f"exit_modules must be a dict with keys {list(EXIT_MODULE_KEYS)} or None, got {spec!r}")
    unknown = sorted(set(spec) - set(EXIT_MODULE_KEYS))
    if unknown:
        raise ValueError(f"exit_modules: unknown key(s) {unknown}; allowed: {list(EXIT_MODULE_KEYS)}")
    kind, exits, rank = spec.get("kind"), spec.get("exits"), spec.get("rank")
    if kind not in EXIT_MODULE_KINDS:
        raise ValueError(f"exit_modules.kind must be one of {list(EXIT_MODULE_KINDS)}, got {kind!r}")
    allowed = exit_layers[:-1]
    if (
        not isinstance(exits, (list, tuple))
        or not exits
        or any(isinstance(k, bool) or not isinstance(k, int) or k not in allowed for k in exits)
    ):
        raise ValueError(
            f"exit_modules.exits must be a non-empty list of exit layers below the last, from {allowed}, got {exits!r}"
        )
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"exit_modules.rank must be an integer >= 1, got {rank!r}")
    alpha = spec.get("alpha", 2 * rank)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"exit_modules.alpha must be a number > 0, got {alpha!r}")
    layer_norm = spec.get("layer_norm", False)
    if not isinstance(layer_norm, bool):
        raise ValueError(f"exit_modules.layer_norm must be true or false, got {layer_norm!r}")
    if layer_norm and kind != "lora":
        raise ValueError(
            f"exit_modules.layer_norm is for kind 'lora' only (the norm merges with the deltas), got {kind!r}"
        )
    checked = {"kind": kind, "exits": sorted(set(exits)), "rank": rank, "alpha": float(alpha)}
    checked |= {"layer_norm": True} if layer_norm else {}  # configs saved before the key stay as they were
    if spec.get("small_ranks") is not None:
        checked["small_ranks"] = _check_small_ranks(spec["small_ranks"], mel_ranks)
    return checked


def _check_small_ranks(small: Any, mel_ranks: list[int] | None) -> dict[str, Any]:
    """`exit_modules.small_ranks`: {"up_to": k, "rank": r[, "alpha": a]}, a second module per exit for MEL ranks <= k
    (a trained rank below the largest); errors name the allowed values."""
    if not isinstance(small, dict) or set(small) - set(SMALL_RANKS_KEYS):
        raise ValueError(f"exit_modules.small_ranks must be a dict with keys {list(SMALL_RANKS_KEYS)}, got {small!r}")
    up_to, rank = small.get("up_to"), small.get("rank")
    allowed = sorted(mel_ranks or [])[:-1]
    if isinstance(up_to, bool) or up_to not in allowed:
        raise ValueError(
            f"exit_modules.small_ranks.up_to must be a trained MEL rank below the largest, from {allowed}, got "
            f"{up_to!r}" + ("" if mel_ranks else " (this model has no factorised embedding: mel_rank=None)")
        )
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"exit_modules.small_ranks.rank must be an integer >= 1, got {rank!r}")
    alpha = small.get("alpha", 2 * rank)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"exit_modules.small_ranks.alpha must be a number > 0, got {alpha!r}")
    return {"up_to": up_to, "rank": rank, "alpha": float(alpha)}


def _check_nested(name: str, values: list[int], maximum: int) -> list[int]:
    """Sorted, unique, within 1..maximum and containing the maximum; errors name the allowed range."""
    if not values or any(not isinstance(v, int) or isinstance(v, bool) for v in values):
        raise ValueError(f"{name} must be a non-empty list of integers in 1..{maximum}, got {values!r}")
    values = sorted(set(values))
    if values[0] < 1 or values[-1] > maximum:
        raise ValueError(f"{name} must lie in 1..{maximum}, got {values}")
    if values[-1] != maximum:
        raise ValueError(f"{name} must contain the full setting {maximum}, got {values}")
    return values


class MLEmbedConfig(PretrainedConfig):
    """Backbone settings (flat, as the backbone's own config has them) plus the three Matryoshka axes.

    Args:
        backbone_type: `model_type` of the wrapped backbone (`qwen3`, `llama`, `bert`, `modernbert`, ...). It is
            also the `model_type` written to `config.json`, so stock code loads the folder as that backbone.
        mel_rank: maximum rank r of the factorised token embedding; `None` keeps the dense embedding (no MEL).
        mel_ranks: nested ranks trained (default: powers of two from 64 below r, plus r).
        exit_layers: MLL exit depths, 1-based (default: 1, 2, 4, 8, 16, 24, ... that fit, plus the last layer).
        matryoshka_dims: MRL output dims (default: powers of two from 8 below the hidden size, plus it).
        default_layers / default_dim / default_rank: the setting used when a call does not name one (default
            `None`: the full model). `AutoModel.from_pretrained(..., trust_remote_code=True, default_layers=8)` and
            sentence-transformers' `model_kwargs` set them at load time; a slimmed export sets `default_dim`.
            Checked against the model when it is built.
        pooling: `last_token` (decoders), `mean` or `cls` (encoders); `None` picks by the backbone.
        normalize: L2-normalise the returned embeddings.
        prompts: prompt prefixes by name; default `query` = the instruction template, `document` = "".
        append_eos: append the EOS token to every text where the tokenizer does not (decoders); `None` = auto.
        max_seq_length: tokens per text (EOS included) the model was trained or evaluated for: `encode`'s default,
            written into every export (sentence-transformers and serving engines read it); `None` = 512 capped by
            the backbone's positions. Recorded at training time; at most the backbone's `max_position_embeddings`.
        exit_modules: decoupled exits, `None` for none: `{"kind": "lora" | "adapter", "exits": [k, ...], "rank": r,
            "alpha": a}`. Each listed exit k (an exit layer below the last) has its own module, applied only when the
            model runs at `layers=k`, so the full path and every other exit stay as they are. `lora`: low-rank
            deltas (rank r, scale a / r; `alpha` default 2r) on every linear layer of the first k layers, plus the
            exit's own copy of the final norm (backbones that have one); merged into plain weights by every export
            of that setting. `"layer_norm": true` (lora, post-LN backbones such as BERT, which have no final norm):
            the exit also owns a copy of layer k's last norm, its path's last normalisation. `adapter`: a residual
            bottleneck of width r on the exit's token states (identity at init). `"small_ranks": {"up_to": k,
            "rank": r2}`: each exit owns a second module of the same kind (rank r2) that runs instead at MEL ranks
            <= k, so the small ranks' corner does not share the module's capacity with the full rank. See
            `MLEmbedExitModule`.
        **kwargs: the backbone's own fields (`hidden_size`, `num_hidden_layers`, `vocab_size`, ...).
    """

    model_type = "mlembed"

    backbone_type: str = "qwen3"
    mel_rank: int | None = None
    mel_ranks: list[int] | None = None
    exit_layers: list[int] | None = None
    matryoshka_dims: list[int] | None = None
    default_layers: int | None = None
    default_dim: int | None = None
    default_rank: int | None = None
    pooling: str | None = None
    normalize: bool = True
    prompts: dict[str, str] | None = None
    append_eos: bool | None = None
    max_seq_length: int | None = None
    exit_modules: dict[str, Any] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self._validate_axes()

    if not dataclasses.is_dataclass(PretrainedConfig):  # transformers 4: a plain class, no fields, no __post_init__

        def __init__(self, **kwargs: Any) -> None:
            for name in AXIS_FIELDS:  # the annotated defaults above are plain class attributes here
                setattr(self, name, kwargs.pop(name, getattr(type(self), name)))
            super().__init__(**kwargs)
            self._validate_axes()

    @classmethod
    def from_backbone(cls, backbone_config: PretrainedConfig, **axes: Any) -> MLEmbedConfig:
        """ML-Embed config around an existing backbone config (e.g. `AutoConfig.from_pretrained(base)`)."""
        fields = {k: v for k, v in backbone_config.to_dict().items() if k not in _META_KEYS}
        return cls(backbone_type=backbone_config.model_type, **fields, **axes)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, **kwargs: Any) -> MLEmbedConfig:
        # The folder's model_type is the backbone's by design; skip the base class's type-mismatch warning.
        config_dict, kwargs = cls.get_config_dict(pretrained_model_name_or_path, **kwargs)
        return cls.from_dict(config_dict, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        # Stock code can load a plain save only without MEL (the dense embedding is then in the checkpoint);
        # with MEL a plain save says "mlembed" so stock loaders refuse it instead of using a random embedding.
        # Hub folders (mlembed.export.hub.export_hub) carry the dense matrix and are rewritten to the backbone's type.
        output["model_type"] = self.backbone_type if self.mel_rank is None else type(self).model_type
        # Unset defaults are left out, so stock code given `default_layers=` errors instead of ignoring it.
        for key in ("default_layers", "default_dim", "default_rank"):
            if output.get(key) is None:
                output.pop(key, None)
        return output

    def backbone_config(self) -> PretrainedConfig:
        """A fresh stock config of the backbone built from this config's fields."""
        fields = {k: v for k, v in self.to_dict().items() if k not in _META_KEYS}
        for key in AXIS_FIELDS:
            fields.pop(key, None)
        config = AutoConfig.for_model(self.backbone_type, **fields)
        config._attn_implementation = self._attn_implementation
        return config

    @property
    def is_decoder_backbone(self) -> bool:
        """Decoders (causal attention) pool the last token and need the EOS appended; encoders do not."""
        return self.backbone_type not in _ENCODER_TYPES

    @property
    def embedding_dim(self) -> int:
        return int(self.hidden_size)

    @property
    def max_positions(self) -> int | None:
        """The backbone's position limit (`max_position_embeddings`), `None` when it has none. RoBERTa-style
        backbones number positions from `padding_idx + 1`, so two of their positions hold no token."""
        value = getattr(self, "max_position_embeddings", None)
        if not value:
            return None
        return int(value) - (2 if self.backbone_type in ("roberta", "xlm-roberta") else 0)

    @property
    def sequence_length(self) -> int:
        """Tokens per text to use: `max_seq_length`, else 512 capped by the backbone's positions."""
        if self.max_seq_length is not None:
            return int(self.max_seq_length)
        return min(DEFAULT_MAX_SEQ_LENGTH, self.max_positions or DEFAULT_MAX_SEQ_LENGTH)

    def _validate_axes(self) -> None:
        """All cross-field rules in one place; errors list the allowed values."""
        hidden, layers, vocab = (getattr(self, k, None) for k in ("hidden_size", "num_hidden_layers", "vocab_size"))
        if hidden is None or layers is None or vocab is None:
            return  # a bare config (e.g. PretrainedConfig internals building defaults); validated once filled
        if self.pooling is None:
            self.pooling = "last_token" if self.is_decoder_backbone else "mean"
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {self.pooling!r}")
        if self.append_eos is None:
            self.append_eos = self.is_decoder_backbone
        if self.mel_rank is not None:
            check_mel_rank(self.mel_rank, vocab, hidden)
            self.mel_ranks = _check_nested(
                "mel_ranks", self.mel_ranks or default_mel_ranks(self.mel_rank), self.mel_rank
            )
        elif self.mel_ranks:
            raise ValueError("mel_ranks given without mel_rank; set mel_rank to the largest rank")
        self.exit_layers = _check_nested("exit_layers", self.exit_layers or default_exit_layers(layers), layers)
        self.matryoshka_dims = _check_nested(
            "matryoshka_dims", self.matryoshka_dims or default_matryoshka_dims(hidden), hidden
        )
        if self.max_seq_length is not None:
            check_max_seq_length(self.max_seq_length, self.max_positions)
        if self.exit_modules is not None:
            self.exit_modules = check_exit_modules(self.exit_modules, self.exit_layers, self.mel_ranks)
        if self.prompts is None:
            self.prompts = default_prompts()
        if not isinstance(self.prompts, dict) or not all(isinstance(v, str) for v in self.prompts.values()):
            raise ValueError(f"prompts must map names to prefix strings, got {self.prompts!r}")


_ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "modernbert", "distilbert", "mpnet", "electra", "deberta-v2")
