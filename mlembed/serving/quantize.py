"""An ONNX export's int8 variant: ONNX Runtime's dynamic quantisation, with the feed-forward down-projections kept
in float or smoothed first (SmoothQuant), since their inputs carry the outlier channels that hurt int8 most."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlembed.serving.runtime import (
    EXTERNAL_DATA_BYTES,
    ONNX_FILE,
    ONNX_INT8_FILE,
    SETTING_KEY,
    load_onnx_tokenizer,
    read_setting,
    tokenize,
)

logger = logging.getLogger(__name__)
SMOOTH_ALPHA = 0.75  # SmoothQuant's migration strength for the down-projections (`quantize_onnx`; bench/serving.py)


def check_int8_options(int8_down_proj: bool, calibration: Sequence[str] | None, smooth_alpha: float) -> None:
    if calibration is not None:
        if isinstance(calibration, str) or not calibration or not all(isinstance(t, str) for t in calibration):
            raise ValueError("calibration must be a non-empty list of texts")
        if not int8_down_proj:
            raise ValueError(
                "calibration smooths the int8 down-projections, which int8_down_proj=False keeps in float: give one"
            )
    if not 0 < smooth_alpha <= 1:
        raise ValueError(f"smooth_alpha must be in (0, 1], got {smooth_alpha}")


def quantize_onnx(
    folder: str | Path,
    int8_down_proj: bool = True,
    calibration: Sequence[str] | None = None,
    smooth_alpha: float = SMOOTH_ALPHA,
) -> dict[str, Any]:
    """An ONNX folder's fp32 graph -> its int8 variant (`onnx/model_quantized.onnx`); returns the updated setting.

    ONNX Runtime's dynamic quantisation: int8 weights per output channel, activations quantised per tensor at run
    time, only MatMuls with a constant weight (the attention products of two activations stay float; a fused
    `Attention` holds the Q, K, V projections). The feed-forward down-projections lose the most: their input (after
    GELU / SiLU) has a few channels 10-20x larger than the rest, which set the one activation scale. Two remedies:
        int8_down_proj=False: keep them in float (closest to fp32, slowest).
        calibration: texts to smooth them with (SmoothQuant, Xiao et al. 2023, arXiv:2211.10438): each input channel
            j is divided by s_j = max|x_j|^alpha / max|W_j|^(1 - alpha) (a `Mul` before the MatMul; max|x_j| over
            the calibration texts' tokens, run through the fp32 graph) and the weight's row j multiplied by it, so
            the float product is unchanged and the outliers move into the per-channel weight scales. ONNX Runtime
            offers SmoothQuant only for static quantisation (through Intel Neural Compressor), hence this step.
    On ml-embed-mini at layers=3 + rank=64 + dim=96 (`bench/serving.py`) calibration takes the nDCG@10 loss against
    PyTorch from 1.3 to 0.5 points at about the plain int8 graph's speed (2.1x PyTorch); keeping them in float, to
    0.3 points at 1.7x.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoConfig

    from mlembed.export import engines

    check_int8_options(int8_down_proj, calibration, smooth_alpha)
    folder = Path(folder)
    setting = read_setting(folder)
    source: Path | Any = folder / ONNX_FILE  # the file, or the smoothed graph in memory
    down = []
    if not int8_down_proj or calibration is not None:  # the weights are loaded only to be smoothed
        graph = onnx.load(source, load_external_data=calibration is not None)
        down = down_projections(graph, AutoConfig.from_pretrained(folder))
        if calibration is not None:
            source = smooth_down_projections(graph, down, folder, calibration, smooth_alpha)
    quiet = _DropMessage("pre-processing before quantization")
    logging.getLogger().addFilter(quiet)  # its advice to pre-process: symbolic shape inference fails on fused graphs
    try:
        quantize_dynamic(
            source,
            folder / ONNX_INT8_FILE,
            weight_type=QuantType.QInt8,
            per_channel=True,  # per tensor: cosine to fp32 0.90 on the MiniLM-based model, per channel 0.99
            op_types_to_quantize=["MatMul", "Attention"],
            # the fused nodes are outside ONNX's shape inference: their outputs are float32
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
            nodes_to_exclude=[] if int8_down_proj else down,
            use_external_data_format=sum(f.stat().st_size for f in (folder / ONNX_FILE).parent.iterdir())
            > 4 * EXTERNAL_DATA_BYTES,  # the int8 weights take a quarter
        )
    finally:
        logging.getLogger().removeFilter(quiet)
    smooth = {"alpha": smooth_alpha, "texts": len(calibration)} if calibration is not None else None
    setting |= {
        "int8_down_proj": int8_down_proj,
        "int8_smooth": smooth,
        "files": setting["files"] | {"int8": ONNX_INT8_FILE},
    }
    engines.update_config_json(folder, {SETTING_KEY: setting})
    return setting


class _DropMessage(logging.Filter):
    """Drops the log records whose message contains `text`."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def down_projections(graph: Any, config: Any) -> list[str]:
    """Names of the MatMul nodes whose constant weight maps the feed-forward width back to the hidden size
    (intermediate x hidden: BERT's `output.dense`, Qwen3's `mlp.down_proj`), one per layer; an error otherwise."""
    shapes = {init.name: tuple(init.dims) for init in graph.graph.initializer}
    wanted = (config.intermediate_size, config.hidden_size)
    names = [n.name for n in graph.graph.node if n.op_type == "MatMul" and shapes.get(n.input[1]) == wanted]
    if config.intermediate_size == config.hidden_size or len(names) != config.num_hidden_layers:
        raise ValueError(
            f"found {len(names)} feed-forward down-projections ({wanted[0]} x {wanted[1]} MatMuls) for "
            f"{config.num_hidden_layers} layers; quantise with int8_down_proj=True and no calibration"
        )
    return names


def smooth_down_projections(graph: Any, names: Sequence[str], folder: Path, texts: Sequence[str], alpha: float) -> Any:
    """`graph` with the inputs of the MatMuls `names` smoothed (see `quantize_onnx`), in place and returned: the same
    function in float, easier to quantise. The calibration runs `folder`'s fp32 graph on `texts` (batches of 32, as
    given: no prompt added)."""
    import tempfile

    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    nodes = {node.name: node for node in graph.graph.node}
    inputs = [nodes[name].input[0] for name in names]
    probe = onnx.ModelProto()  # a copy: saving with external data rewrites the initializers it saves
    probe.CopyFrom(graph)
    probe.graph.output.extend(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in inputs)
    peak = [None] * len(inputs)  # per input channel: max |x| over every token of every text
    tokenizer = load_onnx_tokenizer(folder, int(read_setting(folder)["max_seq_length"]))
    with tempfile.TemporaryDirectory(dir=folder) as tmp:  # a file with external data: any size, no 2 GB limit
        onnx.save_model(probe, f"{tmp}/probe.onnx", save_as_external_data=True, location="probe.data")
        del probe
        session = ort.InferenceSession(f"{tmp}/probe.onnx", providers=["CPUExecutionProvider"])
        for start in range(0, len(texts), 32):
            values = session.run(inputs, tokenize(tokenizer, texts[start : start + 32]))
            for i, x in enumerate(values):  # (B, T, intermediate)
                m = np.abs(x).reshape(-1, x.shape[-1]).max(0)
                peak[i] = m if peak[i] is None else np.maximum(peak[i], m)
    weights = {init.name: init for init in graph.graph.initializer}
    for name, x, x_max in zip(names, inputs, peak):
        node = nodes[name]
        w = numpy_helper.to_array(weights[node.input[1]])  # (intermediate, hidden): row j meets channel j
        s = np.maximum(x_max, 1e-5) ** alpha / np.maximum(np.abs(w).max(1), 1e-5) ** (1 - alpha)
        weights[node.input[1]].CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(w.dtype), node.input[1]))
        graph.graph.initializer.append(numpy_helper.from_array((1 / s).astype(np.float32), f"{name}/smooth_scale"))
        mul = helper.make_node("Mul", [x, f"{name}/smooth_scale"], [f"{name}/smoothed"], name=f"{name}/smooth")
        node.input[0] = f"{name}/smoothed"
        index = next(i for i, n in enumerate(graph.graph.node) if n.name == name)
        graph.graph.node.insert(index, mul)  # before its MatMul: the node list stays topologically sorted
    return graph
