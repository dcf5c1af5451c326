"""ML-Embed: one text-embedding model, elastic in parameters (MEL), depth (MLL) and output size (MRL).

Paper: "ML-Embed: Inclusive and Efficient Embeddings for a Multilingual World" (Zhang et al., ICML 2026).
This file is copied into every checkpoint and runs as Hub remote code: it imports only torch, public
`transformers` API and `configuration_mlembed`.

Design choices:
* The backbone is the stock `transformers` model (`AutoModel.from_config`), held under its own
  `base_model_prefix` (`model` for Qwen3/Llama, `bert` for BERT, ...). Weight names are therefore those of the
  stock checkpoints, and stock code can load our folders (compatibility mode).
* MEL: the backbone's token embedding is removed; `mel.U` (vocab x r, singular values folded in) and `mel.V`
  (r x d) replace it. A lookup gathers rows of U, keeps the first k columns and multiplies by V[:k]: the
  vocab x d product is never built, in training or inference.
* MLL: `layers=k` runs a depth-k view of the backbone that shares its modules (only the first k layers are
  computed), so the backbone's own forward keeps handling masks, rotary embeddings and sliding windows.
  The view's last hidden state already carries the final norm; intermediate exits, requested together for
  training, are read with forward hooks and passed through the same final norm.
* MRL: `dim=d'` keeps the first d' values of the pooled embedding and re-normalises.
* Decoupled exits (optional, `config.exit_modules`): exit k may own a module that only the depth-k path runs
  (LoRA deltas on its first k layers applied by forward hooks, or a residual adapter on its token states), so
  training it leaves the full path bit-identical; exports of that setting merge LoRA into plain weights.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
from transformers import MODEL_MAPPING, AutoModel, AutoTokenizer, PreTrainedModel
from transformers.utils import ModelOutput, cached_file

try:
    from .configuration_mlembed import MLEmbedConfig, check_exit_modules
except ImportError:  # the installed top-level module (the package, tests); imported by name because older
    # transformers 4 (4.48) scan the `except` body of a try block for imports and would ask users to install it
    _configuration = importlib.import_module("configuration_mlembed")
    MLEmbedConfig, check_exit_modules = _configuration.MLEmbedConfig, _configuration.check_exit_modules

logger = logging.getLogger(__name__)
MEL_WEIGHTS_NAME = "mel.safetensors"
EXIT_WEIGHTS_NAME = "exit_modules.safetensors"  # a Hub folder's exit modules (stock loaders never read them)
_HUB_KWARGS = ("cache_dir", "revision", "token", "local_files_only", "subfolder", "force_download")
_FINAL_NORM_NAMES = ("norm", "final_norm", "final_layernorm", "ln_f")


@dataclass
class MLEmbedOutput(ModelOutput):
    """Output of `MLEmbedModel.forward`.

    Args:
        last_hidden_state: (B, T, d) token states at the exit depth (after the final norm). First, so that
            `output[0]` is the token states as for stock models (sentence-transformers pools them).
        embeddings: (B, dim) pooled embeddings, L2-normalised when `config.normalize`.
        exit_embeddings: with `exits=...`: {layer: (B, d)} pooled, un-normalised, full-width embeddings of every
            requested exit (after the final norm), for the 3D-ML losses.
        hidden_states: with `exits=...` and `output_hidden_states` (argument or config): the (B, T, d) token states
            of those exits in increasing depth (after the final norm). sentence-transformers keeps this field as
            `all_layer_embeddings`, so its losses can train every exit through the (possibly DDP-wrapped) model.
    """

    last_hidden_state: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    exit_embeddings: dict[int, torch.Tensor] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class MLEmbedFactorizedEmbedding(nn.Module):
    """Token embedding E ~= U V with nested ranks: `forward(ids, rank=k)` = U[ids, :k] @ V[:k].

    Shapes:
        U: (vocab, r), V: (r, d); input_ids: (B, T) -> (B, T, d).
    """

    def __init__(self, vocab_size: int, rank: int, hidden_size: int, embed_scale: float = 1.0) -> None:
        super().__init__()
        self.U = nn.Parameter(torch.empty(vocab_size, rank))
        self.V = nn.Parameter(torch.empty(rank, hidden_size))
        self.embed_scale = embed_scale  # Gemma-style backbones scale token embeddings by sqrt(d)

    @property
    def rank(self) -> int:
        return self.U.shape[1]

    def forward(self, input_ids: torch.Tensor, rank: int | None = None) -> torch.Tensor:
        k = self.rank if rank is None else rank
        rows = F.embedding(input_ids, self.U)[..., :k]  # (B, T, k): gather first, never vocab x d
        out = rows @ self.V[:k]  # (B, T, d)
        return out * self.embed_scale if self.embed_scale != 1.0 else out

    def dense(self, rank: int | None = None) -> torch.Tensor:
        """The dense (vocab, d) matrix U[:, :k] V[:k], for export to compatibility mode only."""
        k = self.rank if rank is None else rank
        return self.U[:, :k] @ self.V[:k]


class MLEmbedLoRALinear(nn.Module):
    """A low-rank update of one linear layer: delta(x) = scale (x A^T) B^T, B = 0 at init (Hu et al., LoRA,
    arXiv 2106.09685).

    Shapes:
        A: (r, in), B: (out, r); x: (..., in) -> (..., out)
    """

    def __init__(self, in_features: int, out_features: int, rank: int, scale: float) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        self.scale = scale
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # LoRA's own init: A random, B zero, delta 0
        nn.init.zeros_(self.B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.A.T.to(x.dtype)) @ self.B.T.to(x.dtype) * self.scale  # (..., r) -> (..., out)

    def delta_weight(self) -> torch.Tensor:
        """(out, in): what merging adds to the linear layer's weight."""
        return self.scale * (self.B @ self.A)


class MLEmbedExitAdapter(nn.Module):
    """A residual bottleneck on token states, identity at init: h + up(gelu(down(h))), `up` zero.

    Shapes:
        down: (r, d), up: (d, r); hidden: (B, T, d) -> (B, T, d)
    """

    def __init__(self, hidden_size: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Parameter(torch.empty(rank, hidden_size))
        self.up = nn.Parameter(torch.zeros(hidden_size, rank))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))
        nn.init.zeros_(self.up)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + F.gelu(hidden @ self.down.T.to(hidden.dtype)) @ self.up.T.to(hidden.dtype)  # (B, T, d)


class MLEmbedExitModule(nn.Module):
    """What one exit k owns on its own path (`config.exit_modules`); the shared weights stay untouched.

    `lora`: an `MLEmbedLoRALinear` for every linear layer of the first k layers (keyed `"<layer>-<path>"`, e.g.
    `"0-attention-self-query"`), applied by forward hooks during a depth-k pass, and `norm`, the exit's own copy of
    the backbone's final norm (none for backbones without one). With `layer_norm` (post-LN backbones, which have no
    final norm): `layer_norm`, the exit's own copy of layer k's last norm (at `layer_norm_path` in that layer),
    swapped in for the pass. `adapter`: an `MLEmbedExitAdapter` on the exit's token states after the final norm,
    before pooling. `small`: with `small_ranks`, a second module of the same kind that runs instead of this one at
    MEL ranks <= `small_ranks.up_to` (`MLEmbedModel.exit_module(layers, rank)`); None otherwise.
    """

    def __init__(
        self,
        kind: str,
        linears: dict[str, tuple[int, int]],
        hidden_size: int,
        spec: dict[str, Any],
        norm: nn.Module | None,
        layer_norm: tuple[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.lora = self.adapter = self.norm = self.layer_norm = self.small = None
        self.layer_norm_path = None
        if layer_norm is not None:
            self.layer_norm_path, self.layer_norm = layer_norm
        if kind == "lora":
            scale = spec["alpha"] / spec["rank"]
            self.lora = nn.ModuleDict(
                {name: MLEmbedLoRALinear(i, o, spec["rank"], scale) for name, (i, o) in linears.items()}
            )
            self.norm = norm
        else:
            self.adapter = MLEmbedExitAdapter(hidden_size, spec["rank"])

    def own_parameters(self) -> list[nn.Parameter]:
        """The parameters this module's pass runs (those of `small`, which runs instead of it, left out)."""
        return [p for name, p in self.named_parameters() if not name.startswith("small.")]


class MLEmbedPreTrainedModel(PreTrainedModel):
    config_class = MLEmbedConfig
    config: MLEmbedConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.save_pretrained`, as the ML-Embed class also when torch subclassed the model on the fly.

        FSDP2's `fully_shard` turns the model into `FSDPMLEmbedModel`, a class of torch's own module; transformers
        would then copy that module's source files as the remote code and point `auto_map` at it (a folder that
        cannot load). The class is switched back for the save only.
        """
        wrapped = type(self)
        if not wrapped.__module__.startswith("torch."):
            return super().save_pretrained(save_directory, *args, **kwargs)
        self.__class__ = next(c for c in wrapped.__mro__ if not c.__module__.startswith("torch."))
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.__class__ = wrapped

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (MLEmbedLoRALinear, MLEmbedExitAdapter)):
            module.reset_parameters()  # identity at init: the exit starts as the shared path
        elif isinstance(module, MLEmbedFactorizedEmbedding):
            std = getattr(self.config, "initializer_range", 0.02) or 0.02
            # U ~ N(0, 1/r), V ~ N(0, std^2): the entries of U V then have std `std`, like a dense embedding's init
            nn.init.normal_(module.U, std=module.rank**-0.5)
            nn.init.normal_(module.V, std=std)
        else:
            super()._init_weights(module)


class MLEmbedModel(MLEmbedPreTrainedModel):
    """The elastic embedding model: `forward(..., layers=, dim=, rank=)` and `encode(texts, ...)`."""

    def __init__(self, config: MLEmbedConfig) -> None:
        # load-time keywords (`from_pretrained(..., mel_rank=...)`) are set on the config after it validated itself
        config._validate_axes()
        super().__init__(config)
        backbone_config = config.backbone_config()
        if config.mel_rank is not None:
            # build the stock backbone with the fewest embedding rows that keep its padding index valid: the dense
            # vocab x d matrix is never allocated (modules may keep `padding_idx`, e.g. XLM-R's positions)
            backbone_config.vocab_size = (config.pad_token_id or 0) + 1
        backbone = _build_backbone(backbone_config)
        backbone.config.vocab_size = config.vocab_size
        # Hold the backbone under its own prefix so our weight names are the stock checkpoint's names.
        self.base_model_prefix = type(backbone).base_model_prefix
        self._no_split_modules = getattr(backbone, "_no_split_modules", None)
        self.add_module(self.base_model_prefix, backbone)
        self._layers_path, self._num_layers = _find_layers(backbone, config.num_hidden_layers)
        self._final_norm_name = next((n for n in _FINAL_NORM_NAMES if getattr(backbone, n, None) is not None), None)
        self.mel = None
        self.dense_embedding_key = None
        if config.mel_rank is not None:
            dense = backbone.get_input_embeddings()
            scale = float(getattr(dense, "scalar_embed_scale", 1.0))
            self.mel = MLEmbedFactorizedEmbedding(config.vocab_size, config.mel_rank, config.hidden_size, scale)
            name = _remove_module(backbone, dense)  # efficiency mode: the dense vocab x d matrix is not kept
            # a Hub folder also carries the dense matrix for stock loaders; this model skips it
            self.dense_embedding_key = f"{self.base_model_prefix}.{name}.weight"
            # stock names, with or without the prefix (a Hub folder stores the bare backbone's names)
            self._keys_to_ignore_on_load_unexpected = [rf"^({self.base_model_prefix}\.)?{re.escape(name)}\.weight$"]
            self._keys_to_ignore_on_load_missing = [r"^mel\.(U|V)$"]  # a Hub folder has them in mel.safetensors
        self.exit_modules = self._build_exit_modules(config.exit_modules) if config.exit_modules else None
        if self.exit_modules is not None:  # checked before loading (`_check_exit_weights`); a Hub folder keeps them
            self._keys_to_ignore_on_load_missing = [*(self._keys_to_ignore_on_load_missing or []), r"^exit_modules\."]
        self._depth_views: dict[tuple[int, int], tuple[nn.Module, tuple[int, ...]]] = {}
        self._warned: set[tuple[str, int]] = set()
        self.tokenizer = None
        self.post_init()
        self.resolve_axes()  # the config's default setting must fit this model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.from_pretrained` that also reads a Hub folder's `mel.safetensors`.

        Two layouts load: a plain save (factors inside `model.safetensors`) and a Hub folder (stock backbone
        weights with the dense embedding, which this model skips, plus the factors in `mel.safetensors`). A folder
        with neither is refused: random factors would give silently wrong embeddings.
        """
        want_info = kwargs.pop("output_loading_info", False)
        hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        path = str(pretrained_model_name_or_path)
        config = kwargs.get("config")
        if config is None or isinstance(config, str):
            config = cls.config_class.from_pretrained(path if config is None else config, **hub_kwargs)
        exit_file = _check_exit_weights(cls, config, path, hub_kwargs) if config.exit_modules else None
        # transformers < 4.50 matches checkpoint names against the class's `base_model_prefix`, not the instance's:
        # with `model` for a BERT backbone (`bert.*`) it loaded none of the backbone's weights and reported nothing
        # missing (uninitialised memory, NaN vectors). The class carries the backbone's prefix for the call.
        prefix, kept = MODEL_MAPPING[type(config.backbone_config())].base_model_prefix, cls.base_model_prefix
        cls.base_model_prefix = prefix
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
            )
        finally:
            cls.base_model_prefix = kept
        if model.mel is not None:
            model._load_factors(path, hub_kwargs)
        if exit_file is not None:  # a Hub folder: the exit modules sit beside the stock weights
            with torch.no_grad():
                for key, value in load_file(exit_file).items():
                    model.get_parameter(key).copy_(value)
        return (model, info) if want_info else model

    def _load_factors(self, path: str, hub_kwargs: dict[str, Any]) -> None:
        factors_file = _resolve(path, MEL_WEIGHTS_NAME, hub_kwargs)
        if factors_file is not None:
            factors = load_file(factors_file)
            with _zero3_gathered([self.mel.U, self.mel.V]), torch.no_grad():
                for name in ("U", "V"):
                    param = getattr(self.mel, name)
                    if tuple(factors[name].shape) != tuple(param.shape):
                        raise ValueError(
                            f"{MEL_WEIGHTS_NAME}: {name} has shape {tuple(factors[name].shape)}, "
                            f"the config needs {tuple(param.shape)}"
                        )
                    param.copy_(factors[name])
        elif not {"mel.U", "mel.V"} <= _checkpoint_keys(path, hub_kwargs):
            raise ValueError(
                f"{path} has no MEL factors (mel.U, mel.V) although its config sets mel_rank={self.config.mel_rank}. "
                "The folder was probably re-saved by stock code (e.g. SentenceTransformer.save after loading without "
                "trust_remote_code), which keeps only the dense embedding. Load it without trust_remote_code "
                "(compatibility mode, full setting), or rebuild the elastic model with `mlembed convert FOLDER OUT "
                "--rank R`, or re-export the original with `mlembed export SRC OUT --mode hub`."
            )

    # --------------------------------------------------------------------------------------- exit modules
    def _build_exit_modules(self, spec: dict[str, Any]) -> nn.ModuleDict:
        """One `MLEmbedExitModule` per exit of `spec` (`config.exit_modules`), identity at init; the lora norm is a
        copy of the backbone's final norm, the `layer_norm` one a copy of layer k's last norm."""
        final_norm = getattr(self.backbone, self._final_norm_name) if self._final_norm_name else None
        if spec.get("layer_norm") and final_norm is not None:
            raise ValueError(
                "exit_modules.layer_norm is for post-LN backbones without a final norm; this "
                f"{self.config.backbone_type} backbone has one ({self._final_norm_name}), which every lora exit "
                "module owns a copy of already"
            )
        modules = {}
        for exit_layer in spec["exits"]:
            linears = {
                f"{index}-{name.replace('.', '-')}": (module.in_features, module.out_features)
                for index, layer in enumerate(self.layer_stack[:exit_layer])
                for name, module in layer.named_modules()
                if isinstance(module, nn.Linear)
            }
            norm = copy.deepcopy(final_norm) if spec["kind"] == "lora" and final_norm is not None else None
            layer_norm = None
            if spec.get("layer_norm"):
                path = _last_norm(self.layer_stack[exit_layer - 1])
                layer_norm = (path, copy.deepcopy(self.layer_stack[exit_layer - 1].get_submodule(path)))
            module = MLEmbedExitModule(spec["kind"], linears, self.config.hidden_size, spec, norm, layer_norm)
            if spec.get("small_ranks"):
                small = {**spec, "rank": spec["small_ranks"]["rank"], "alpha": spec["small_ranks"]["alpha"]}
                norms = copy.deepcopy((norm, layer_norm))  # its own copies: trained apart from the other module's
                module.small = MLEmbedExitModule(spec["kind"], linears, self.config.hidden_size, small, *norms)
            modules[str(exit_layer)] = module
        return nn.ModuleDict(modules)

    def add_exit_modules(
        self,
        kind: str,
        exits: Sequence[int],
        rank: int,
        alpha: float | None = None,
        layer_norm: bool = False,
        small_ranks: dict[str, Any] | None = None,
    ) -> None:
        """Give `exits` their own modules (`config.exit_modules`), identity at init: every output stays as it was
        until they are trained (the second stage of the two-stage recipe). A model that has modules already is an
        error; the spec is checked by the config (errors name the allowed values)."""
        if self.exit_modules is not None:
            raise ValueError(f"this model has exit modules already: {self.config.exit_modules}")
        spec = {"kind": kind, "exits": list(exits), "rank": rank, **({} if alpha is None else {"alpha": alpha})}
        spec |= {"layer_norm": True} if layer_norm else {}
        spec |= {"small_ranks": small_ranks} if small_ranks else {}
        self.config.exit_modules = check_exit_modules(spec, self.config.exit_layers, self.config.mel_ranks)
        param = next(self.parameters())
        self.exit_modules = self._build_exit_modules(self.config.exit_modules).to(param.device, param.dtype)

    def exit_module(self, layers: int, rank: int | None = None) -> MLEmbedExitModule | None:
        """The module a pass at (`layers`, MEL `rank`) runs: exit `layers`' own, its `small` one at MEL ranks <=
        `small_ranks.up_to` (`rank=None`: the full rank), None where that exit runs the shared path."""
        if self.exit_modules is None or str(layers) not in self.exit_modules:
            return None
        module = self.exit_modules[str(layers)]
        small = self.config.exit_modules.get("small_ranks")
        if small and rank is not None and rank <= small["up_to"]:
            return module.small
        return module

    def _lora_hooks(self, module: MLEmbedExitModule) -> list[Any]:
        """Forward hooks applying each LoRA to its linear layer for one pass. With gradients: the delta is added to
        the layer's output (LoRA's training form). Without (inference): the layer runs once on its merged weight
        W + delta, swapped in now and put back by the handle's `remove()` (the pass's `finally`), so the shared
        weights stay exact; one (out, r) x (r, in) product per layer instead of two low-rank products per token.
        Like every hook here, this changes the shared layers for the pass: one pass at a time per model object."""
        hooks = []
        for name, lora in module.lora.items():
            index, path = name.split("-", 1)
            linear = _get_path(self.layer_stack[int(index)], path.replace("-", "."))
            if torch.is_grad_enabled():
                hooks.append(linear.register_forward_hook(_add_delta(lora)))
            else:
                merged = linear.weight + lora.delta_weight().to(linear.weight.dtype)  # (out, in)
                hooks.append(_SwappedParameters(linear, {"weight": merged}))
        return hooks

    def _merged_exit_state(
        self, state: dict[str, torch.Tensor], layers: int, rank: int | None = None
    ) -> dict[str, torch.Tensor]:
        """`state` (the backbone cut to `layers`) with the module of (`layers`, MEL `rank`) merged in: LoRA deltas
        added to the linear weights, the exit's norm in place of the final norm. Adapters cannot merge into stock
        weights."""
        module = self.exit_module(layers, rank)
        if module is None:
            return state
        if module.kind != "lora":
            raise ValueError(
                f"exit {layers} has an '{module.kind}' module, which no stock backbone can hold; only 'lora' exit "
                "modules merge into an export of that setting (or export another layers=)"
            )
        state = dict(state)
        for name, lora in module.lora.items():
            index, path = name.split("-", 1)
            key = f"{self._layers_path}.{index}.{path.replace('-', '.')}.weight"
            with torch.no_grad():
                state[key] = state[key] + lora.delta_weight().to(state[key].dtype)
        if module.norm is not None:
            for key, value in module.norm.state_dict().items():
                state[f"{self._final_norm_name}.{key}"] = value
        if module.layer_norm is not None:
            for key, value in module.layer_norm.state_dict().items():
                state[f"{self._layers_path}.{layers - 1}.{module.layer_norm_path}.{key}"] = value
        return state

    # ----------------------------------------------------------------------------------------------- axes
    @property
    def backbone(self) -> nn.Module:
        return getattr(self, self.base_model_prefix)

    @property
    def layer_stack(self) -> nn.ModuleList:
        """The backbone's list of decoder / encoder layers (`layers=k` runs the first k of them)."""
        return _get_path(self.backbone, self._layers_path)

    def backbone_state_dict(self, layers: int | None = None, rank: int | None = None) -> dict[str, torch.Tensor]:
        """The backbone's weights under their stock names, only the first `layers` layers kept, with the module that
        (`layers`, MEL `rank`) runs merged in where there is one (for exports: the stock model then computes that
        setting; `rank=None`: the full rank's)."""
        keep = (
            self.config.num_hidden_layers
            if layers is None
            else self._check_axis("layers", layers, self.config.num_hidden_layers, self.config.exit_layers)
        )
        pattern = re.compile(rf"^{re.escape(self._layers_path)}\.(\d+)\.")
        state = self.backbone.state_dict()
        state = {k: v for k, v in state.items() if not (m := pattern.match(k)) or int(m.group(1)) < keep}
        return self._merged_exit_state(state, keep, rank)

    def num_parameters(
        self,
        only_trainable: bool = False,
        exclude_embeddings: bool = False,
        layers: int | None = None,
        rank: int | None = None,
    ) -> int:
        """Parameters, as `PreTrainedModel.num_parameters` counts them, that an encode at (`layers`, `rank`) uses.

        Without `layers` / `rank` it is the whole model (exit modules included). With them, the layers after the
        exit, the MEL columns beyond rank k (`(r - k) * (vocab + d)`: U[:, k:] and V[k:]) and the exit modules of
        other exits (and the exit's other module, with `small_ranks`) are left out. `exclude_embeddings` also leaves
        out the MEL factors. Counted from the live
        modules, so it holds for any backbone and on the meta device.
        """
        cfg = self.config
        total = super().num_parameters(only_trainable=only_trainable, exclude_embeddings=exclude_embeddings)
        counted = [
            p for p in (self.mel.parameters() if self.mel is not None else ()) if p.requires_grad or not only_trainable
        ]
        if exclude_embeddings:
            total -= sum(p.numel() for p in counted)
        if layers is not None:
            layers = self._check_axis("layers", layers, cfg.num_hidden_layers, cfg.exit_layers)
            later = [p for layer in self.layer_stack[layers:] for p in layer.parameters()]
            total -= sum(p.numel() for p in later if p.requires_grad or not only_trainable)
        if rank is not None:
            if self.mel is None:
                raise ValueError(f"rank={rank!r} needs a factorised embedding (mel_rank=None); allowed: None")
            rank = self._check_axis("rank", rank, cfg.mel_rank, cfg.mel_ranks)
        if (layers is not None or rank is not None) and self.exit_modules is not None:
            depth = cfg.num_hidden_layers if layers is None else layers
            running = self.exit_module(depth, rank)
            kept = set() if running is None else {id(p) for p in running.own_parameters()}
            unused = [p for p in self.exit_modules.parameters() if id(p) not in kept]
            total -= sum(p.numel() for p in unused if p.requires_grad or not only_trainable)
        if rank is not None:
            if not exclude_embeddings:  # U (vocab, r) and V (r, d) lose their (r - k) columns / rows
                total -= sum(p.numel() // cfg.mel_rank * (cfg.mel_rank - rank) for p in counted)
        return total

    def resolve_axes(self, layers: Any = None, dim: Any = None, rank: Any = None) -> tuple[int, int, int | None]:
        """Validate (layers, dim, rank); `None` takes the config's default (the full setting unless set).

        Untrained values are allowed and warn once.
        """
        cfg = self.config
        layers = cfg.default_layers if layers is None else layers
        dim = cfg.default_dim if dim is None else dim
        rank = cfg.default_rank if rank is None else rank
        layers = self._check_axis("layers", layers, cfg.num_hidden_layers, cfg.exit_layers)
        dim = self._check_axis("dim", dim, cfg.hidden_size, cfg.matryoshka_dims)
        if self.mel is None:
            if rank is not None:
                raise ValueError(
                    f"rank={rank!r} needs a factorised embedding, but this model has none (mel_rank=None); "
                    "the only allowed value is None"
                )
        else:
            rank = self._check_axis("rank", rank, cfg.mel_rank, cfg.mel_ranks)
        return layers, dim, rank

    def _check_axis(self, name: str, value: Any, maximum: int, trained: Sequence[int]) -> int:
        if value is None:
            return maximum
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= maximum:
            raise ValueError(
                f"{name} must be an integer in 1..{maximum} (trained values: {list(trained)}), got {value!r}"
            )
        value = int(value)
        if value not in trained and (name, value) not in self._warned:
            self._warned.add((name, value))
            logger.warning("%s=%d was not trained (trained values: %s); quality may drop", name, value, list(trained))
        return value

    # ---------------------------------------------------------------------------------------------- forward
    def get_input_embeddings(self) -> nn.Module:
        return self.mel if self.mel is not None else self.backbone.get_input_embeddings()

    def embed_tokens(self, input_ids: torch.Tensor, rank: int | None = None) -> torch.Tensor:
        """(B, T) token ids -> (B, T, d) input embeddings at MEL rank `rank` (dense when MEL is off)."""
        if self.mel is not None:
            return self.mel(input_ids, rank).to(self.dtype)
        return self.backbone.get_input_embeddings()(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        layers: int | None = None,
        dim: int | None = None,
        rank: int | None = None,
        exits: bool | Sequence[int] = False,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        use_exit_module: bool = True,
        **kwargs: Any,
    ) -> MLEmbedOutput:
        """Embed a tokenised batch.

        Args:
            input_ids: (B, T) token ids (left or right padded; decoders need the EOS token last).
            attention_mask: (B, T) 1 for tokens, 0 for padding.
            layers: exit depth k (first k layers computed), `None` = all.
            dim: output dims kept (prefix, re-normalised), `None` = all.
            rank: MEL rank used for the token embedding, `None` = the maximum.
            exits: `True` for every configured exit layer up to `layers`, or a list of depths <= `layers`: also
                return `exit_embeddings` from the same pass (training); `layers` itself is always among them. A
                pass that runs an exit module returns only its own exit.
            use_exit_module: run exit `layers`' own module where it has one (`config.exit_modules`); `False` runs
                the shared path (for comparisons).

        Shapes:
            input_ids, attention_mask: (B, T) -> embeddings: (B, dim); exit_embeddings[l]: (B, d).
        """
        if input_ids is None:
            raise ValueError("input_ids is required")
        kwargs.pop("return_dict", None)  # always a ModelOutput
        layers, dim, rank = self.resolve_axes(layers, dim, rank)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        module = self.exit_module(layers, rank) if use_exit_module else None
        exit_list = self._exit_list(exits, layers, module is not None)
        depth = layers  # the embedding is always taken at `layers`; exits are extra outputs of the same pass

        inputs_embeds = self.embed_tokens(input_ids, rank)  # (B, T, d)
        backbone_kwargs: dict[str, Any] = {"attention_mask": attention_mask, "inputs_embeds": inputs_embeds}
        if self.config.is_decoder_backbone:
            # positions from the mask make left padding give the same result as right padding
            backbone_kwargs["position_ids"] = positions_from_mask(attention_mask)  # (B, T)
            backbone_kwargs["use_cache"] = False
        elif bool((attention_mask[:, 0] == 0).any()):
            raise ValueError("encoder backbones need right padding (attention_mask[:, 0] must be 1)")
        if token_type_ids is not None:
            backbone_kwargs["token_type_ids"] = token_type_ids

        captured: dict[int, torch.Tensor] = {}
        hooks = [
            self._layer(depth_l - 1).register_forward_hook(_capture(captured, depth_l))
            for depth_l in exit_list
            if depth_l < depth
        ]
        if module is not None and module.lora is not None:
            hooks += self._lora_hooks(module)
        if module is not None and module.layer_norm is not None:
            target = self._layer(depth - 1).get_submodule(module.layer_norm_path)
            hooks.append(_SwappedParameters(target, dict(module.layer_norm._parameters)))
        try:
            view = self._depth_view(depth, module.norm if module is not None else None)
            hidden = view(**backbone_kwargs, **kwargs).last_hidden_state  # (B, T, d)
        finally:
            for hook in hooks:
                hook.remove()
        if module is not None and module.adapter is not None:
            hidden = module.adapter(hidden)  # (B, T, d)

        pooled = self.pool(hidden, attention_mask)  # (B, d)
        exit_embeddings, hidden_states = None, None
        if exit_list:
            states = {l: self._apply_final_norm(h) for l, h in captured.items()} | {depth: hidden}  # (B, T, d) each
            exit_embeddings = {l: pooled if l == depth else self.pool(h, attention_mask) for l, h in states.items()}
            if output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states:
                hidden_states = tuple(states[l] for l in sorted(states))  # wrappers that keep only these see exits
        embeddings = truncate_embeddings(pooled, dim, normalize=self.config.normalize)
        return MLEmbedOutput(
            last_hidden_state=hidden,
            embeddings=embeddings,
            exit_embeddings=exit_embeddings,
            hidden_states=hidden_states,
        )

    def _exit_list(self, exits: bool | Sequence[int], layers: int, own_module: bool = False) -> list[int]:
        """The exits to return, always ending at `layers` (the configured ones up to it for `exits=True`; only
        `layers` when the pass runs that exit's own module, whose hooks change the shallower layers too)."""
        if exits is False or exits is None:
            return []
        if exits is True:
            return [layers] if own_module else sorted({l for l in self.config.exit_layers if l <= layers} | {layers})
        chosen = {self._check_axis("exits", l, layers, self.config.exit_layers) for l in exits}
        if own_module and chosen - {layers}:
            raise ValueError(
                f"exits {sorted(chosen - {layers})} cannot come from a pass that runs exit {layers}'s own module; "
                f"embed them at their own layers=, or pass use_exit_module=False for the shared path"
            )
        return sorted(chosen | {layers})

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, d) token states -> (B, d) by the configured pooling (padding-side agnostic)."""
        return pool_embeddings(hidden, attention_mask, self.config.pooling)

    def _apply_final_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        return getattr(self.backbone, self._final_norm_name)(hidden) if self._final_norm_name else hidden

    def _layer(self, index: int) -> nn.Module:
        return _get_path(self.backbone, self._layers_path)[index]

    def _depth_view(self, depth: int, norm: nn.Module | None = None) -> nn.Module:
        """The backbone limited to its first `depth` layers, sharing every module (built once per depth); `norm`
        (an exit's own) replaces the final norm in it."""
        if depth == self._num_layers and norm is None:
            return self.backbone
        layers = _get_path(self.backbone, self._layers_path)
        # rebuilt when a wrapper swapped modules after the view was made (FSDP1 wraps layers in place); the key is
        # a few microseconds per forward (a list, not a sliced ModuleList, which would construct a module)
        key = tuple(map(id, self.backbone._modules.values())) + tuple(map(id, list(layers)[:depth])) + (id(norm),)
        view, built_for = self._depth_views.get((depth, id(norm)), (None, None))
        if view is None or built_for != key:
            view = _truncated_view(self.backbone, self._layers_path, depth)
            if norm is not None:
                setattr(view, self._final_norm_name, norm)  # the view's own child table: the backbone keeps its norm
            self._depth_views[(depth, id(norm))] = (view, key)
        return view

    # ----------------------------------------------------------------------------------------------- encode
    @torch.inference_mode()
    def encode(
        self,
        texts: str | Sequence[str],
        layers: int | None = None,
        dim: int | None = None,
        rank: int | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        tokenizer: Any = None,
        use_exit_module: bool = True,
    ) -> np.ndarray:
        """Embed raw texts; returns a float32 array (N, dim) (one row per text, input order).

        `prompt_name` picks a prefix from `config.prompts` (`query`, `document`); `prompt` gives one directly.
        `max_length` (tokens per text, EOS included) defaults to `config.max_seq_length`, the length the model was
        trained or evaluated for; longer texts are truncated, with one warning per call.
        """
        out_dim = self.resolve_axes(layers, dim, rank)[1]  # fail before tokenising
        if isinstance(texts, str):
            texts = [texts]
        max_length = self.config.sequence_length if max_length is None else max_length
        prompt_text = resolve_prompt(self.config.prompts, prompt_name, prompt)
        tokenizer = tokenizer or self.get_tokenizer()
        out = np.zeros((len(texts), out_dim), dtype=np.float32)
        truncated = 0
        was_training = self.training
        self.eval()  # no dropout, also when called in the middle of training
        try:
            for idx in length_sorted_batches(texts, batch_size):
                batch, cut = _tokenize(
                    tokenizer, [prompt_text + texts[i] for i in idx], max_length, self.config.append_eos
                )
                truncated += cut
                batch = {k: v.to(self.device) for k, v in batch.items()}
                emb = self(**batch, layers=layers, dim=dim, rank=rank, use_exit_module=use_exit_module).embeddings
                out[idx] = emb.float().cpu().numpy()
        finally:
            self.train(was_training)
        if truncated:
            logger.warning(
                "%d of %d texts are longer than max_length=%d tokens and were truncated (the model's "
                "max_seq_length; pass max_length= to change it)",
                truncated,
                len(texts),
                max_length,
            )
        return out

    def get_tokenizer(self) -> Any:
        """The tokenizer saved with the model (loaded once from `name_or_path`)."""
        if self.tokenizer is None:
            if not self.name_or_path:
                raise ValueError("this model was not loaded from a folder; pass tokenizer= or set model.tokenizer")
            # this model's config is given, so transformers reads no config (and runs no code) of the folder's own
            self.tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, config=self.config)
        return self.tokenizer

    def tokenize(self, texts: Sequence[str], tokenizer: Any, max_length: int | None = None) -> dict[str, torch.Tensor]:
        """`tokenize_with_eos` with this model's EOS rule and, by default, its `max_seq_length`."""
        max_length = self.config.sequence_length if max_length is None else max_length
        return tokenize_with_eos(tokenizer, texts, max_length, append_eos=bool(self.config.append_eos))


def pool_embeddings(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool token states by `pooling` (`last_token`, `mean`, `cls`); positions come from the mask (any padding side).

    Branch-free on the data (a `torch.export` / ONNX graph of the same code gives the same vectors).

    Shapes:
        hidden: (B, T, d), attention_mask: (B, T) -> (B, d)
    """
    mask = attention_mask.to(hidden.dtype)
    if pooling == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    positions = torch.arange(hidden.shape[1], device=hidden.device)  # (T,)
    masked = torch.where(attention_mask.bool(), positions, -1 if pooling == "last_token" else hidden.shape[1])
    index = masked.max(-1).values if pooling == "last_token" else masked.min(-1).values  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Decoder position ids counted over real tokens only, so left and right padding give the same vectors.

    Shapes:
        attention_mask: (B, T) -> (B, T)
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def truncate_embeddings(embeddings: torch.Tensor, dim: int, normalize: bool = True) -> torch.Tensor:
    """The MRL cut: the first `dim` values of each embedding, L2-normalised (the meaning of `dim=` everywhere).

    Shapes:
        embeddings: (..., d) -> (..., dim)
    """
    prefix = embeddings[..., :dim]
    return F.normalize(prefix, p=2, dim=-1) if normalize else prefix


def resolve_prompt(
    prompts: Mapping[str, str] | None, prompt_name: str | None = None, prompt: str | None = None
) -> str:
    """The text put before every input: `prompts[prompt_name]` (`query`, `document`), `prompt` as given, or none.

    Shared by `encode`, the ONNX runner and the corpus encoder, so a prompt is chosen and checked the same way.
    """
    if prompt is not None and prompt_name is not None:
        raise ValueError("give prompt_name or prompt, not both")
    if prompt_name is None:
        return prompt or ""
    prompts = prompts or {}
    if prompt_name not in prompts:
        raise ValueError(f"prompt_name must be one of {sorted(prompts)}, got {prompt_name!r}")
    return prompts[prompt_name]


def length_sorted_batches(texts: Sequence[str], batch_size: int) -> Iterator[np.ndarray]:
    """Indices of `texts` in batches of similar length, longest first (a stable sort by characters).

    Every batch is padded to its longest text, so sorting once saves most of the padding; the caller puts each
    batch's rows back at these indices (input order). Texts already in that order keep it without a sort, so a
    caller that sorted them (the corpus encoder hands `encode` length-sorted chunks) does not sort twice. Shared by
    `encode`, the ONNX runner and the corpus encoder.

    Shapes:
        -> each batch: (<= batch_size,) int64 indices into `texts`
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    lengths = [len(text) for text in texts]
    if all(a >= b for a, b in zip(lengths, lengths[1:])):
        order = np.arange(len(texts))  # what the stable sort would give
    else:
        order = np.argsort([-n for n in lengths], kind="stable")
    for start in range(0, len(texts), batch_size):
        yield order[start : start + batch_size]


def tokenize_with_eos(
    tokenizer: Any, texts: Sequence[str], max_length: int = 512, append_eos: bool = True
) -> dict[str, torch.Tensor]:
    """Right-padded tokenisation to at most `max_length` tokens; with `append_eos`, EOS ends every row.

    Decoder embeddings pool the EOS token, so truncation must never cut it off: a long text keeps its first
    `max_length - 1` tokens and then the EOS (added here unless the tokenizer adds it), exactly what
    sentence-transformers' tokenisation gives with the Hub folder's tokenizer. Shared by `encode` and the training
    collator.

    Shapes:
        -> input_ids, attention_mask: (len(texts), T) with T <= max_length.
    """
    return _tokenize(tokenizer, texts, max_length, append_eos)[0]


def _tokenize(
    tokenizer: Any, texts: Sequence[str], max_length: int, append_eos: bool
) -> tuple[dict[str, torch.Tensor], int]:
    """`tokenize_with_eos` and the number of texts that were truncated.

    Texts are tokenised to `max_length + 1` tokens: a row that long (content beyond the limit) was cut.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be an integer >= 2 (one token plus the EOS), got {max_length!r}")
    eos = tokenizer.eos_token_id if append_eos else None
    if append_eos and eos is None:
        raise ValueError("append_eos=True needs a tokenizer with an eos_token; set append_eos=False for encoders")
    texts = list(texts)
    if eos is None:
        probe = tokenizer(texts, truncation=True, max_length=max_length + 1)["input_ids"]
        cut = sum(len(ids) > max_length for ids in probe)
        encoded = tokenizer(
            texts, padding=True, truncation=True, max_length=max_length, padding_side="right", return_tensors="pt"
        )
        return dict(encoded), cut
    rows, cut = [], 0
    for ids in tokenizer(texts, truncation=True, max_length=max_length + 1)["input_ids"]:
        content = ids[:-1] if ids and ids[-1] == eos else ids  # the tokenizer may append the EOS itself
        cut += len(content) > max_length - 1
        rows.append(torch.tensor(content[: max_length - 1] + [eos], dtype=torch.long))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    input_ids = nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad)  # (B, T) right padded
    attention_mask = nn.utils.rnn.pad_sequence([torch.ones_like(r) for r in rows], batch_first=True)  # (B, T)
    return {"input_ids": input_ids, "attention_mask": attention_mask}, cut


def _resolve(path: str, filename: str, hub_kwargs: dict[str, Any]) -> str | None:
    """Local or cached/Hub path of a file in a model folder, or None when the folder has no such file."""
    try:
        return cached_file(path, filename, **hub_kwargs)
    except OSError:
        return None


def _checkpoint_keys(path: str, hub_kwargs: dict[str, Any]) -> set[str]:
    """Tensor names stored in a folder's safetensors weights (single file or sharded), read from headers only."""
    index = _resolve(path, "model.safetensors.index.json", hub_kwargs)
    if index is not None:
        with open(index) as f:
            return set(json.load(f)["weight_map"])
    single = _resolve(path, "model.safetensors", hub_kwargs)
    if single is None:
        return set()
    with safe_open(single, framework="pt") as f:
        return set(f.keys())


def _tensor_shapes(path: str, hub_kwargs: dict[str, Any], files: Sequence[str]) -> tuple[str, dict[str, tuple]]:
    """(file, {tensor name: shape}) of the first of `files` a folder has (a safetensors file or a sharded index),
    read from headers only; ("", {}) when it has none."""
    for name in files:
        found = _resolve(path, name, hub_kwargs)
        if found is None:
            continue
        shards = [found]
        if name.endswith(".index.json"):
            with open(found) as f:
                shards = [
                    _resolve(path, shard, hub_kwargs) for shard in sorted(set(json.load(f)["weight_map"].values()))
                ]
        shapes = {}
        for shard in shards:
            with safe_open(shard, framework="pt") as f:
                shapes.update({key: tuple(f.get_slice(key).get_shape()) for key in f.keys()})
        return found, shapes
    return "", {}


def _check_exit_weights(cls: type, config: Any, path: str, hub_kwargs: dict[str, Any]) -> str | None:
    """Check a folder's exit-module tensors against what its config declares, before anything loads; errors name
    the exit and the shapes. Returns the Hub folder's separate exit file, None when they sit in the main weights."""
    with torch.device("meta"):
        expected = {f"exit_modules.{k}": tuple(v.shape) for k, v in cls(config).exit_modules.state_dict().items()}
    file, shapes = _tensor_shapes(
        path, hub_kwargs, (EXIT_WEIGHTS_NAME, "model.safetensors.index.json", "model.safetensors")
    )
    stored = {k: v for k, v in shapes.items() if k.startswith("exit_modules.")}
    exit_of = lambda key: int(key.split(".")[1])  # noqa: E731
    undeclared = sorted({exit_of(k) for k in stored} - set(config.exit_modules["exits"]))
    if undeclared:
        raise ValueError(
            f"{path}: the weights hold exit modules for exits {undeclared}, which the config's exit_modules "
            f"{config.exit_modules} does not declare"
        )
    for key, shape in expected.items():
        if key not in stored:
            raise ValueError(
                f"{path}: the config declares a '{config.exit_modules['kind']}' module for exit {exit_of(key)}, but "
                f"the weights lack its tensor {key} (shape {shape}); re-export the model, or drop exit "
                f"{exit_of(key)} from config.exit_modules"
            )
        if stored[key] != shape:
            raise ValueError(
                f"{path}: exit {exit_of(key)}'s module does not fit this backbone: {key} has shape {stored[key]} "
                f"in the weights, the model needs {shape}"
            )
    return file if file.endswith(EXIT_WEIGHTS_NAME) else None


def _build_backbone(config: Any) -> nn.Module:
    """The stock backbone; a backbone that cannot use the requested attention (e.g. Gemma2 and sdpa) gets its own."""
    try:
        return AutoModel.from_config(config)
    except ValueError as err:
        if "attention implementation" not in str(err) or config._attn_implementation in (None, "eager"):
            raise
        logger.warning("%s Using the backbone's default attention instead.", str(err).split(" Please")[0])
        config._attn_implementation = None
        return AutoModel.from_config(config)


def _zero3_gathered(params: list[nn.Parameter]) -> Any:
    """A context in which `params` are whole tensors: under DeepSpeed ZeRO-3 (`zero.Init`, e.g. `TrainingArguments`
    with a stage-3 config made before `from_pretrained`) they are partitioned; writes on rank 0 are re-partitioned."""
    if not any(hasattr(p, "ds_id") for p in params):
        return contextlib.nullcontext()
    # inside `try`: transformers' remote-code check (`get_imports`) skips try blocks, so users without DeepSpeed can
    # still load this file; only a model that DeepSpeed already partitioned reaches this import
    try:
        import deepspeed
    except ImportError as err:
        raise ImportError(
            "these parameters are partitioned by DeepSpeed ZeRO-3, but deepspeed cannot be imported: "
            "pip install deepspeed"
        ) from err
    return deepspeed.zero.GatheredParameters(params, modifier_rank=0)


def _add_delta(lora: MLEmbedLoRALinear):
    def hook(_module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return output + lora(inputs[0])  # (..., out)

    return hook


class _SwappedParameters:
    """A module computing with other parameters until `remove()` gives it back its own parameter objects: an exit's
    own norm (gradients reach it) or a linear layer's merged weight W + delta (inference)."""

    def __init__(self, target: nn.Module, parameters: dict[str, torch.Tensor]) -> None:
        self.target, self.shared = target, {name: target._parameters[name] for name in parameters}
        target._parameters.update(parameters)

    def remove(self) -> None:
        self.target._parameters.update(self.shared)


def _last_norm(layer: nn.Module) -> str:
    """Dotted path of the last normalisation module in a layer (BERT: `output.LayerNorm`)."""
    norms = [name for name, module in layer.named_modules() if name and type(module).__name__.endswith("Norm")]
    if not norms:
        raise ValueError(f"exit_modules.layer_norm: {type(layer).__name__} has no norm module of its own")
    return norms[-1]


def _capture(store: dict[int, torch.Tensor], depth: int):
    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        store[depth] = output[0] if isinstance(output, (tuple, list)) else output  # layers return (B, T, d)

    return hook


def _find_layers(backbone: nn.Module, num_layers: int) -> tuple[str, int]:
    """Dotted path of the backbone's layer stack (`layers`, `encoder.layer`, ...)."""
    for name, module in backbone.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers:
            return name, num_layers
    raise ValueError(f"cannot find a stack of {num_layers} layers in {type(backbone).__name__}")


def _get_path(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _shallow(module: nn.Module) -> nn.Module:
    """A new module object sharing all submodules and parameters, with its own child table."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    return clone


def _truncated_view(backbone: nn.Module, layers_path: str, depth: int) -> nn.Module:
    """The backbone with its layer stack cut to `depth`; shares every parameter, mutates nothing."""
    view = _shallow(backbone)
    view.config = copy.copy(backbone.config)
    view.config.num_hidden_layers = depth
    parent, parts = view, layers_path.split(".")
    for part in parts[:-1]:
        child = _shallow(getattr(parent, part))
        if hasattr(child, "config"):
            child.config = view.config
        setattr(parent, part, child)
        parent = child
    setattr(parent, parts[-1], nn.ModuleList(list(getattr(parent, parts[-1]))[:depth]))
    return view


def _remove_module(root: nn.Module, target: nn.Module) -> str:
    """Detach `target` from `root` (set its attribute to None) and return its dotted name."""
    for name, module in root.named_modules():
        if module is target:
            parent_name, _, attr = name.rpartition(".")
            setattr(_get_path(root, parent_name) if parent_name else root, attr, None)
            return name
    raise ValueError(f"{type(target).__name__} is not part of {type(root).__name__}")


MLEmbedConfig.register_for_auto_class("AutoConfig")
MLEmbedModel.register_for_auto_class("AutoModel")
