"""ML-Embed folder -> a physically smaller ML-Embed folder (first k layers, rank r, default dim d)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from configuration_mlembed import MLEmbedConfig
from mlembed.export.convert import export_max_seq_length, load_tokenizer, save_folder, stock_config
from mlembed.export.engines import save_tokenizer
from modeling_mlembed import MLEmbedModel

logger = logging.getLogger(__name__)


def export_slim(
    src: str | Path,
    out: str | Path,
    layers: int | None = None,
    rank: int | None = None,
    dim: int | None = None,
    dtype: str = "auto",
    max_seq_length: int | None = None,
) -> dict[str, Any]:
    """Physically smaller ML-Embed folder whose default output equals the source at (layers, dim, rank).

    `dtype`: of the written weights (`auto` keeps the source's); `max_seq_length`: default the source's."""
    model = MLEmbedModel.from_pretrained(src, dtype=dtype)
    layers, dim, rank = model.resolve_axes(layers, dim, rank)
    cfg = model.config
    axes = {
        "max_seq_length": export_max_seq_length(cfg, max_seq_length),
        "exit_layers": sorted({l for l in cfg.exit_layers if l <= layers} | {layers}),
        "matryoshka_dims": cfg.matryoshka_dims,
        "default_dim": dim,
        "pooling": cfg.pooling,
        "normalize": cfg.normalize,
        "prompts": cfg.prompts,
        "append_eos": cfg.append_eos,
    }
    if rank is not None:
        axes["mel_ranks"] = sorted({k for k in cfg.mel_ranks if k <= rank} | {rank})
    kept = _kept_exit_modules(model, layers)
    if kept:
        axes["exit_modules"] = {**cfg.exit_modules, "exits": kept}
    slim_config = MLEmbedConfig.from_backbone(stock_config(cfg, layers), mel_rank=rank, **axes)
    slim = MLEmbedModel(slim_config).to(model.dtype)
    slim.backbone.load_state_dict(model.backbone_state_dict(layers), strict=False)  # exit `layers`' module merged
    for exit_layer in kept:
        slim.exit_modules[str(exit_layer)].load_state_dict(model.exit_modules[str(exit_layer)].state_dict())
    if rank is not None:
        with torch.no_grad():
            slim.mel.U.copy_(model.mel.U[:, :rank])
            slim.mel.V.copy_(model.mel.V[:rank])
    save_folder(slim, out)
    save_tokenizer(load_tokenizer(src), out, slim_config.max_seq_length)
    before, after = _weights_bytes(src), _weights_bytes(out)
    return {
        "layers": layers,
        "rank": rank,
        "dim": dim,
        "bytes_before": before,
        "bytes_after": after,
        "saving": 1 - after / before if before else 0.0,
    }


def _kept_exit_modules(model: MLEmbedModel, layers: int) -> list[int]:
    """The exit modules a slim export at `layers` keeps unmerged: those below `layers`, unless exit `layers`' own
    module is merged into the shared weights (the shallower ones were trained on the unmerged body: dropped)."""
    if model.config.exit_modules is None:
        return []
    below = [k for k in model.config.exit_modules["exits"] if k < layers]
    if model.exit_module(layers) is not None and below:
        logger.warning(
            "exit %d's module is merged into the exported layers; the modules of exits %s are dropped (they were "
            "trained on the unmerged layers)",
            layers,
            below,
        )
        return []
    return below


def _weights_bytes(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))
