"""ONNX exports that hold the whole embedding of one elastic setting, and the runners for them.

No serving engine changes depth or rank per request, so an export fixes one setting (layers k, rank r, dim d) and
puts everything after tokenisation inside the graph: `(input_ids, attention_mask) -> sentence_embedding`, computed
as the stock backbone cut to k layers with the dense embedding E = U[:, :r] V[:r] baked in, then the model's
pooling (`pool_embeddings`, positions read from the mask), the first d dims and the L2 normalisation
(`truncate_embeddings`). The graph is traced from that PyTorch code with `torch.onnx.export(dynamo=True)` (dynamic
batch and sequence axes) and run with ONNX Runtime; `onnxruntime.quantization.quantize_dynamic` writes an int8
variant next to it. BERT backbones are traced instead with eager attention by torch's TorchScript exporter
and fused by ONNX Runtime's transformer optimizer (`onnxruntime.transformers.optimizer`: one `Attention`,
`SkipLayerNormalization`, `BiasGelu` and `EmbedLayerNormalization` node where the plain graph has dozens): its fusion
rules match that exporter's attention pattern, not the dynamo graph's nor sdpa's, and the fused graph is what makes
ONNX Runtime faster than PyTorch on a CPU (`bench/serving.py`). The fused nodes are ONNX Runtime's own
(`com.microsoft` domain), so that graph needs ONNX Runtime, as fastembed uses.
sentence-transformers' own ONNX backend is not used: it goes through optimum-onnx, which pins
transformers 4.x (we need 5.x), and it exports the token states only, leaving pooling and truncation outside.

The folder (`export_onnx`):

    onnx/model.onnx              fp32 graph (weights inside; external `model.onnx.data` above 2 GB)
    onnx/model_quantized.onnx    int8 weights, dynamic activation quantisation (`quantize_onnx`)
    tokenizer.json, tokenizer_config.json, special_tokens_map.json
                                 EOS appended by tokenizer.json itself (decoders), `model_max_length` = max length
    config.json                  the backbone config at depth k, the engine keys, `mlembed_onnx` (the setting)
    config_sentence_transformers.json
                                 the prompts (`query`, `document`)

That is the layout fastembed's `TextEmbedding.add_custom_model` loads (`register_fastembed`). `OnnxEmbedder` runs it
with ONNX Runtime and the `tokenizers` library (no PyTorch model), tokenising exactly as fastembed does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mlembed.serving.quantize import SMOOTH_ALPHA, check_int8_options, quantize_onnx
from mlembed.serving.runtime import EXTERNAL_DATA_BYTES, INPUT_NAMES, ONNX_FILE, OUTPUT_NAME, SETTING_KEY
from modeling_mlembed import pool_embeddings, positions_from_mask, truncate_embeddings

logger = logging.getLogger(__name__)


def export_onnx(
    src: str | Path,
    out: str | Path,
    layers: int | None = None,
    rank: int | None = None,
    dim: int | None = None,
    quantize: bool = True,
    max_seq_length: int | None = None,
    opset: int | None = None,
    fuse: bool | None = None,
    int8_down_proj: bool = True,
    calibration: Sequence[str] | None = None,
    smooth_alpha: float = SMOOTH_ALPHA,
) -> dict[str, Any]:
    """ML-Embed folder -> ONNX folder computing the final embedding at (layers, rank, dim); returns the setting.

    Args:
        src: an ML-Embed folder (any layout `MLEmbedModel.from_pretrained` reads).
        out: the folder to write.
        layers / rank / dim: the setting (`None`: the source's default, the full model unless it records one).
        quantize: also write the int8 variant (`onnx/model_quantized.onnx`, `quantize_onnx`).
        max_seq_length: tokens per text, recorded in the tokenizer (default: the model's `max_seq_length`).
        opset: ONNX opset (default: torch's recommended one).
        fuse: fuse attention, layer norms and GELU with ONNX Runtime's transformer optimizer; default: where it has
            a fusion for the backbone (`ORT_FUSIONS`); `True` for another backbone is an error naming those.
        int8_down_proj / calibration / smooth_alpha: how the int8 variant treats the feed-forward
            down-projections (`quantize_onnx`).
    """
    from mlembed.export import engines
    from mlembed.export.convert import export_max_seq_length, load_tokenizer, stock_backbone
    from modeling_mlembed import MLEmbedModel

    if not quantize and (calibration is not None or not int8_down_proj):
        raise ValueError("calibration / int8_down_proj=False shape the int8 variant, which quantize=False skips")
    check_int8_options(int8_down_proj, calibration, smooth_alpha)  # before the export, not after it
    model = MLEmbedModel.from_pretrained(src, dtype=torch.float32).eval()
    layers, dim, rank = model.resolve_axes(layers, dim, rank)
    cfg = model.config
    max_seq_length = export_max_seq_length(cfg, max_seq_length)  # checked, like the setting, before writing
    stock = stock_backbone(model, layers, rank).eval()
    fusion = _fusion_type(stock.config.model_type, fuse)
    graph = EmbeddingGraph(stock, cfg.pooling, dim, bool(cfg.normalize), cfg.is_decoder_backbone).eval()
    out = Path(out)
    (out / ONNX_FILE).parent.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(src)
    example = tokenizer(["an example", "a longer example text"], padding=True, return_tensors="pt")
    weight_bytes = sum(p.numel() * p.element_size() for p in stock.parameters())
    if fusion:
        _export_fused(graph, stock.config, fusion, example, out / ONNX_FILE, opset, weight_bytes > EXTERNAL_DATA_BYTES)
    else:
        batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
        with torch.no_grad():
            program = torch.onnx.export(
                graph,
                (example["input_ids"], example["attention_mask"]),
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_shapes={name: {0: batch, 1: sequence} for name in INPUT_NAMES},
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
        program.save(out / ONNX_FILE, external_data=weight_bytes > EXTERNAL_DATA_BYTES)
    engines.save_tokenizer(tokenizer, out, max_seq_length, append_eos=bool(cfg.append_eos))
    stock.config.max_seq_length = max_seq_length
    stock.config.save_pretrained(out)
    setting = {
        "layers": layers,
        "rank": rank,
        "dim": dim,
        "pooling": cfg.pooling,
        "normalize": bool(cfg.normalize),
        "max_seq_length": max_seq_length,
        "fused": fusion,
        "files": {"fp32": ONNX_FILE},
    }
    engines.update_config_json(out, engines.matryoshka_keys(cfg.matryoshka_dims, dim) | {SETTING_KEY: setting})
    (out / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": dict(cfg.prompts or {}), "default_prompt_name": None, "similarity_fn_name": "cosine"})
        + "\n"
    )
    if quantize:
        setting = quantize_onnx(out, int8_down_proj, calibration, smooth_alpha)
    logger.info("wrote %s: layers=%d rank=%s dim=%d", out, layers, rank, dim)
    return setting


ORT_FUSIONS = {"bert": "bert"}  # backbone model_type -> ONNX Runtime optimizer model_type (tested ones only)


def _fusion_type(model_type: str, fuse: bool | None) -> str | None:
    """The optimizer model type to fuse the backbone with, or None for the plain dynamo graph."""
    if fuse is None:
        return ORT_FUSIONS.get(model_type)
    if fuse and model_type not in ORT_FUSIONS:
        raise ValueError(
            f"fuse=True needs a backbone with an ONNX Runtime fusion, one of {sorted(ORT_FUSIONS)}; "
            f"got {model_type!r} (fuse=None exports it unfused)"
        )
    return ORT_FUSIONS[model_type] if fuse else None


def _export_fused(
    graph: torch.nn.Module, config: Any, fusion: str, example: Any, path: Path, opset: int | None, external: bool
) -> None:
    """Trace `graph` with eager attention (TorchScript exporter), then fuse it with ONNX Runtime's optimizer."""
    import warnings

    from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    backbone = graph.backbone
    previous = backbone.config._attn_implementation
    backbone.set_attn_implementation("eager")  # the attention pattern the optimizer's fusion rules match
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES} | {OUTPUT_NAME: {0: "batch"}}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
            torch.onnx.export(
                graph,
                (example["input_ids"], example["attention_mask"]),
                str(path),
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_axes=axes,
                opset_version=opset or 17,
                dynamo=False,
            )
    finally:
        backbone.set_attn_implementation(previous)
    options = FusionOptions(fusion)
    options.attention_mask_format = AttentionMaskFormat.AttentionMask  # the (B, T) mask as given, any padding side
    fused = optimize_model(
        str(path),
        model_type=fusion,
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        optimization_options=options,
    )
    counts = fused.get_fused_operator_statistics()
    if not counts.get("Attention"):
        raise RuntimeError(
            f"ONNX Runtime's {fusion} fusion found no attention to fuse ({counts}); export with fuse=False"
        )
    fused.save_model_to_file(str(path), use_external_data_format=external)


class EmbeddingGraph(torch.nn.Module):
    """(input_ids, attention_mask) -> the final embedding: backbone, pooling, first `dim` dims, L2 norm.

    The same functions as `MLEmbedModel.forward` (`positions_from_mask`, `pool_embeddings`, `truncate_embeddings`),
    around a stock backbone that already is the setting (k layers, dense rank-r embedding).

    Shapes:
        input_ids, attention_mask: (B, T) -> (B, dim)
    """

    def __init__(self, backbone: torch.nn.Module, pooling: str, dim: int, normalize: bool, decoder: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling, self.dim, self.normalize, self.decoder = pooling, dim, normalize, decoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.decoder:  # as MLEmbedModel.forward: positions over real tokens, no KV cache
            kwargs |= {"position_ids": positions_from_mask(attention_mask), "use_cache": False}
        hidden = self.backbone(**kwargs).last_hidden_state  # (B, T, d)
        pooled = pool_embeddings(hidden, attention_mask, self.pooling)  # (B, d)
        return truncate_embeddings(pooled, self.dim, normalize=self.normalize)  # (B, dim)
