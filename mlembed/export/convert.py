"""Conversion into ML-Embed, the folder on disk, and the stock backbone of one setting (what every export starts from).

* `convert_base`: any `AutoModel` backbone folder -> ML-Embed folder, MEL factors from an fp32 SVD of the token
  embedding (singular values folded into U).
* `convert_released`: the reference's release layout (a standard Qwen3 folder whose embedding is U V, plus
  `U.pth` / `V.pth` bare-tensor pickles, read with `torch.load(weights_only=True)` only) -> ML-Embed folder.
* `save_folder`, `load_tokenizer`, `is_mlembed_folder`: an ML-Embed folder written and read with the installed code.
* `stock_backbone`: a stock `AutoModel` at (layers, rank), the dense embedding baked in: the body of the compat, Hub
  and ONNX exports (`mlembed.export.compat`, `mlembed.export.hub`, `mlembed.serving`).
"""

from __future__ import annotations

import inspect
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedConfig

from configuration_mlembed import AXIS_FIELDS, MLEmbedConfig, check_max_seq_length, check_mel_rank
from mlembed.export import engines
from modeling_mlembed import MLEmbedModel

logger = logging.getLogger(__name__)
_REMOTE_CODE_FILES = ("configuration_mlembed.py", "modeling_mlembed.py")


def svd_factors(embedding: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-`rank` factors of E in float32: U = left vectors * singular values, V = right vectors.

    Shapes:
        embedding: (vocab, d) -> U: (vocab, rank), V: (rank, d).
    """
    check_mel_rank(rank, *embedding.shape)
    left, singular, right = torch.linalg.svd(embedding.float(), full_matrices=False)
    return (left[:, :rank] * singular[:rank]).contiguous(), right[:rank].contiguous()


def from_backbone(
    backbone: torch.nn.Module,
    mel_rank: int | None = None,
    factors: tuple[torch.Tensor, torch.Tensor] | None = None,
    **axes: Any,
) -> MLEmbedModel:
    """Wrap a loaded stock backbone into ML-Embed (its weights copied; MEL factors from SVD unless given)."""
    config = MLEmbedConfig.from_backbone(backbone.config, mel_rank=mel_rank, **axes)
    model = MLEmbedModel(config)
    dense = backbone.get_input_embeddings().weight
    state = backbone.state_dict()
    if mel_rank is not None:
        state.pop(_embedding_key(backbone))
    missing, unexpected = model.backbone.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("inv_freq")]:
        raise ValueError(f"backbone weights do not fit: missing {missing}, unexpected {unexpected}")
    if mel_rank is not None:
        u, v = factors if factors is not None else svd_factors(dense.detach(), mel_rank)
        with torch.no_grad():
            model.mel.U.copy_(u)
            model.mel.V.copy_(v)
    return model.to(backbone.dtype)


def add_mel(model: MLEmbedModel, rank: int) -> MLEmbedModel:
    """A dense ML-Embed model (no MEL, e.g. a plain fine-tune) with its token embedding factorised at `rank` (SVD),
    every other setting kept: MEL training can then continue from it."""
    if model.mel is not None:
        raise ValueError(
            f"the model already has MEL factors (mel_rank={model.config.mel_rank}); add_mel needs a dense one"
        )
    axes = {
        key: getattr(model.config, key) for key in AXIS_FIELDS if key not in ("backbone_type", "mel_rank", "mel_ranks")
    }
    factorised = from_backbone(stock_backbone(model), mel_rank=rank, **axes)
    if model.exit_modules is not None:  # built from the config above; their trained weights travel too
        factorised.exit_modules.load_state_dict(model.exit_modules.state_dict())
    return factorised


def save_folder(model: MLEmbedModel, out: str | Path, tokenizer: Any = None) -> Path:
    """Write a complete ML-Embed folder: weights, config with auto_map, both remote-code files, tokenizer."""
    out = Path(out)
    model.save_pretrained(out)
    return save_folder_files(out, tokenizer)


def save_folder_files(out: str | Path, tokenizer: Any = None) -> Path:
    """Both remote-code files (save_pretrained copies them too, but not for every caller) and the tokenizer."""
    out = Path(out)
    here = Path(inspect.getfile(MLEmbedModel)).resolve().parent  # both remote-code files are installed there
    for name in _REMOTE_CODE_FILES:
        if not (out / name).exists():
            shutil.copy(here / name, out / name)
    if tokenizer is not None:
        engines.save_tokenizer_settings(tokenizer, out)
    return out


def read_config_dict(path: str | Path, **hub_kwargs: Any) -> dict[str, Any]:
    """A folder's (or Hub id's) `config.json` as a dict, without building any class or running any code."""
    return PreTrainedConfig.get_config_dict(str(path), **hub_kwargs)[0]


def is_mlembed_folder(path: str | Path) -> bool:
    """Whether a folder holds an ML-Embed model (plain save or Hub folder): its config has the ML-Embed axes."""
    return "backbone_type" in read_config_dict(path)


def load_tokenizer(path: str | Path, trust_remote_code: bool = False) -> Any:
    """The tokenizer of a folder. ML-Embed folders are read with the installed config class (transformers would
    otherwise ask to run the folder's copy of the code); other folders run their own code only when allowed."""
    if is_mlembed_folder(path):
        return AutoTokenizer.from_pretrained(path, config=MLEmbedConfig.from_pretrained(path))
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def convert_base(
    base: str | Path,
    out: str | Path,
    rank: int | None,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    device: str | None = None,
    **axes: Any,
) -> MLEmbedModel:
    """Base backbone folder (or Hub id) -> ML-Embed folder with SVD-initialised MEL factors.

    `trust_remote_code` lets a backbone that needs its own code (not in transformers) run it; off by default.
    `device` is where the SVD runs (a GPU makes it seconds for a 150k x 4096 embedding); the folder is the same.
    """
    config = AutoConfig.from_pretrained(base, trust_remote_code=trust_remote_code)
    MLEmbedConfig.from_backbone(config, mel_rank=rank, **axes)  # every axis checked before the weights load
    backbone = AutoModel.from_pretrained(base, dtype=torch.float32, trust_remote_code=trust_remote_code)
    model = from_backbone(backbone.to(device or "cpu"), mel_rank=rank, **axes).to("cpu", getattr(torch, dtype))
    save_folder(model, out, load_tokenizer(base, trust_remote_code=trust_remote_code))
    logger.info("converted %s -> %s (rank %s)", base, out, rank)
    return model


def load_released_factors(folder: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read U.pth / V.pth as bare tensors; never executes pickled code."""
    tensors = []
    for name in ("U.pth", "V.pth"):
        path = Path(folder) / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: a released ML-Embed folder has U.pth and V.pth")
        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # UnpicklingError and friends: anything beyond plain tensors is refused
            raise ValueError(
                f"{path} is not a plain tensor file (refused to unpickle arbitrary objects): {err}"
            ) from err
        if not isinstance(value, torch.Tensor) or value.dim() != 2:
            raise ValueError(f"{path} must hold a single 2-D tensor, got {type(value).__name__}")
        tensors.append(value.float())
    u, v = tensors
    if u.shape[1] != v.shape[0]:
        raise ValueError(f"U.pth {tuple(u.shape)} and V.pth {tuple(v.shape)} do not share the rank dimension")
    return u, v


def convert_released(folder: str | Path, out: str | Path, **axes: Any) -> MLEmbedModel:
    """Reference release (Qwen3 folder + U.pth + V.pth) -> ML-Embed folder."""
    u, v = load_released_factors(folder)
    backbone = AutoModel.from_pretrained(folder, dtype=torch.float32)
    dense = backbone.get_input_embeddings().weight.detach()
    if u.shape[0] != dense.shape[0] or v.shape[1] != dense.shape[1]:
        raise ValueError(f"factors {tuple(u.shape)} x {tuple(v.shape)} do not fit the embedding {tuple(dense.shape)}")
    error = ((u @ v) - dense).norm() / dense.norm().clamp(min=1e-12)
    if error > 1e-2:
        logger.warning("U V differs from the checkpoint's embedding (relative error %.3g)", error)
    model = from_backbone(backbone, mel_rank=u.shape[1], factors=(u, v), **axes)
    save_folder(model, out, load_tokenizer(folder))
    return model


def stock_backbone(model: MLEmbedModel, layers: int | None = None, rank: int | None = None) -> torch.nn.Module:
    """A stock `AutoModel` backbone with the first `layers` layers and dense E = U[:, :rank] V[:rank]."""
    layers, _, rank = model.resolve_axes(layers, None, rank)
    config = stock_config(model.config, layers)
    stock = AutoModel.from_config(config).to(model.dtype)
    state = model.backbone_state_dict(layers, rank)  # the module (layers, rank) runs, merged
    if model.mel is not None:
        state[_embedding_key(stock)] = model.mel.dense(rank).detach().to(model.dtype)
    missing, unexpected = stock.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("inv_freq")]:
        raise ValueError(f"cannot build the stock backbone: missing {missing}, unexpected {unexpected}")
    return stock


def stock_config(config: MLEmbedConfig, layers: int) -> Any:
    """The stock backbone's config cut to `layers` layers (and their `layer_types`)."""
    fields = config.backbone_config().to_dict()
    fields["num_hidden_layers"] = layers
    if isinstance(fields.get("layer_types"), list):
        fields["layer_types"] = fields["layer_types"][:layers]
    model_type = fields.pop("model_type")
    return AutoConfig.for_model(model_type, **{k: v for k, v in fields.items() if k != "transformers_version"})


def _embedding_key(stock: torch.nn.Module) -> str:
    emb = stock.get_input_embeddings()
    return next(f"{n}.weight" for n, m in stock.named_modules() if m is emb)


def export_max_seq_length(config: MLEmbedConfig, override: int | None = None) -> int:
    """The tokens per text an export records: `override`, else what the model was trained or evaluated for (its
    `max_seq_length`; 512 capped by the positions for older folders); never above the backbone's positions."""
    length = config.sequence_length if override is None else override
    return check_max_seq_length(length, config.max_positions)
