"""Serving one elastic setting outside PyTorch: an ONNX graph that holds the whole embedding, and its runners.

* `onnx_export`: ML-Embed folder -> ONNX folder of one (layers, rank, dim) setting (`export_onnx`);
* `quantize`: its int8 variant (`quantize_onnx`: dynamic quantisation, down-projections kept in float or smoothed);
* `runtime`: what the folder holds, `OnnxEmbedder` (ONNX Runtime) and `register_fastembed`.

The exports engines load as a model folder (compat, Hub) are `mlembed.export`'s; the engine files are written by
`mlembed.export.engines` for those and for this export alike.
"""

from mlembed.serving.onnx_export import ORT_FUSIONS, EmbeddingGraph, export_onnx
from mlembed.serving.quantize import SMOOTH_ALPHA, down_projections, quantize_onnx, smooth_down_projections
from mlembed.serving.runtime import (
    INPUT_NAMES,
    ONNX_FILE,
    ONNX_INT8_FILE,
    OUTPUT_NAME,
    SETTING_KEY,
    OnnxEmbedder,
    load_onnx_tokenizer,
    read_setting,
    register_fastembed,
    tokenize,
)

__all__ = [
    "INPUT_NAMES",
    "ONNX_FILE",
    "ONNX_INT8_FILE",
    "ORT_FUSIONS",
    "OUTPUT_NAME",
    "SETTING_KEY",
    "SMOOTH_ALPHA",
    "EmbeddingGraph",
    "OnnxEmbedder",
    "down_projections",
    "export_onnx",
    "load_onnx_tokenizer",
    "quantize_onnx",
    "read_setting",
    "register_fastembed",
    "smooth_down_projections",
    "tokenize",
]
