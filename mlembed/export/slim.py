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
        axes["mel_ranks"] = _kept_mel_ranks(model, layers, rank)
    kept = _kept_exit_modules(model, layers)
    modules = [model.exit_module(k, rank) for k in kept]  # what each kept exit runs at `rank` (`exit_module`)
    if kept:
        small = cfg.exit_modules.get("small_ranks")
        spec = {k: v for k, v in cfg.exit_modules.items() if k != "small_ranks"} | {"exits": kept}
        if modules[0] is not model.exit_modules[str(kept[0])]:  # the small ranks' modules: now the only modules
            spec |= {"rank": small["rank"], "alpha": small["alpha"]}
        elif small:
            spec["small_ranks"] = small
        axes["exit_modules"] = spec
    slim_config = MLEmbedConfig.from_backbone(stock_config(cfg, layers), mel_rank=rank, **axes)
    slim = MLEmbedModel(slim_config).to(model.dtype)
    slim.backbone.load_state_dict(model.backbone_state_dict(layers, rank), strict=False)  # (layers, rank)'s merged
    for exit_layer, module in zip(kept, modules, strict=True):
        slim.exit_modules[str(exit_layer)].load_state_dict(module.state_dict())
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


def _kept_mel_ranks(model: MLEmbedModel, layers: int, rank: int) -> list[int]:
    """The MEL ranks a slim export at (`layers`, `rank`) keeps: those up to `rank`, less those at which exit `layers`
    runs another module than the one merged at `rank` (`exit_module`: the small ranks' module, `small_ranks`, below a
    larger `rank`): the export holds the merged one, so at those ranks it would not compute what the source does
    (asking for one then warns as an untrained rank)."""
    ranks = sorted({k for k in model.config.mel_ranks if k <= rank} | {rank})
    merged = model.exit_module(layers, rank)
    if merged is None:
        return ranks
    dropped = [k for k in ranks if model.exit_module(layers, k) is not merged]
    if dropped:
        logger.warning(
            "exit %d's module for MEL rank %d is merged into the exported layers; MEL ranks %s, which run its module "
            "for the small ranks, are left out of the export's trained ranks (export with --rank %d for them)",
            layers,
            rank,
            dropped,
            max(dropped),
        )
    return [k for k in ranks if k not in dropped]


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
