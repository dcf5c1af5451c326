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

import numpy as np
import torch

from modeling_mlembed import pool_embeddings, positions_from_mask, truncate_embeddings

logger = logging.getLogger(__name__)
ONNX_FILE = "onnx/model.onnx"
ONNX_INT8_FILE = "onnx/model_quantized.onnx"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"
SETTING_KEY = "mlembed_onnx"
_EXTERNAL_DATA_BYTES = 1 << 30  # the protobuf limit is 2 GB; larger graphs keep their weights beside the file
SMOOTH_ALPHA = 0.75  # SmoothQuant's migration strength for the down-projections (`quantize_onnx`; bench/serving.py)


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
    _check_int8_options(int8_down_proj, calibration, smooth_alpha)  # before the export, not after it
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
        _export_fused(
            graph, stock.config, fusion, example, out / ONNX_FILE, opset, weight_bytes > _EXTERNAL_DATA_BYTES
        )
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
        program.save(out / ONNX_FILE, external_data=weight_bytes > _EXTERNAL_DATA_BYTES)
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


def _check_int8_options(int8_down_proj: bool, calibration: Sequence[str] | None, smooth_alpha: float) -> None:
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

    _check_int8_options(int8_down_proj, calibration, smooth_alpha)
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
            > 4 * _EXTERNAL_DATA_BYTES,  # the int8 weights take a quarter
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


def read_setting(folder: str | Path) -> dict[str, Any]:
    """The setting an ONNX export computes (`config.json`'s `mlembed_onnx`); an error if the folder is not one."""
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    if SETTING_KEY not in config:
        raise ValueError(
            f"{folder} is not an ML-Embed ONNX export (no {SETTING_KEY} in config.json); make one with "
            "`mlembed export SRC OUT --mode onnx`"
        )
    return config[SETTING_KEY]


class OnnxEmbedder:
    """Run an ONNX export with ONNX Runtime: `encode(texts, prompt_name=...)` -> (N, dim) float32, input order.

    Texts are tokenised from `tokenizer.json` as fastembed does (truncated to the export's max length, EOS appended
    by the tokenizer for decoders, right padded); prompts come from `config_sentence_transformers.json`.

    Args:
        folder: an `export_onnx` folder.
        int8: run `onnx/model_quantized.onnx` instead of the fp32 graph.
        threads: ONNX Runtime intra-op threads (default: its own choice, all cores).
        providers: ONNX Runtime execution providers (default CPU).
        max_length: truncate to fewer tokens than the export records (never more: the export's max length is the
            model's).
        spin: let idle ONNX Runtime threads spin-wait (its default). Off here: on a CPU shared with other work
            spinning threads steal the cores they wait for (measured 1.02x -> 1.29x PyTorch's speed on a busy
            2-core machine); turn it on for a dedicated machine.

    Example:
        >>> embedder = OnnxEmbedder("mini-onnx", int8=True, threads=2)  # doctest: +SKIP
        >>> embedder.encode(["Wie installiere ich ein Paket?"], prompt_name="query").shape  # doctest: +SKIP
        (1, 96)
    """

    def __init__(
        self,
        folder: str | Path,
        int8: bool = False,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        max_length: int | None = None,
        spin: bool = False,
    ) -> None:
        import onnxruntime as ort

        self.folder = Path(folder)
        self.setting = read_setting(self.folder)
        kind = "int8" if int8 else "fp32"
        if kind not in self.setting["files"]:
            raise ValueError(f"{folder} has no {kind} model; it has {sorted(self.setting['files'])}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.session = ort.InferenceSession(
            str(self.folder / self.setting["files"][kind]),
            sess_options=options,
            providers=list(providers or ["CPUExecutionProvider"]),
        )
        self.max_length = min(int(max_length or self.setting["max_seq_length"]), int(self.setting["max_seq_length"]))
        self.tokenizer = load_onnx_tokenizer(self.folder, self.max_length)
        st_config = self.folder / "config_sentence_transformers.json"
        self.prompts = (json.loads(st_config.read_text()).get("prompts") or {}) if st_config.is_file() else {}

    @property
    def dim(self) -> int:
        return int(self.setting["dim"])

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Right-padded int64 `input_ids` and `attention_mask` (B, T), as the graph takes them."""
        return tokenize(self.tokenizer, texts)

    def encode(
        self,
        texts: str | Sequence[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
    ) -> np.ndarray:
        """Embed raw texts; returns a float32 array (N, dim), one row per text in input order."""
        if prompt is not None and prompt_name is not None:
            raise ValueError("give prompt_name or prompt, not both")
        if prompt_name is not None and prompt_name not in self.prompts:
            raise ValueError(f"prompt_name must be one of {sorted(self.prompts)}, got {prompt_name!r}")
        prefix = self.prompts[prompt_name] if prompt_name is not None else (prompt or "")
        if isinstance(texts, str):
            texts = [texts]
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths batch together
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            batch = self.tokenize([prefix + texts[i] for i in idx])
            out[idx] = self.session.run([OUTPUT_NAME], batch)[0]
        return out


def load_onnx_tokenizer(folder: Path, max_length: int) -> Any:
    """The export's `tokenizer.json` (the `tokenizers` library), truncating at `max_length` and right-padding with
    the pad token, as fastembed sets it up."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_length)
    pad = json.loads((folder / "tokenizer_config.json").read_text()).get("pad_token")
    pad_id = tokenizer.token_to_id(pad) if isinstance(pad, str) else None
    if pad_id is None:  # the id is never read (masked out); any valid one does
        pad_id = json.loads((folder / "config.json").read_text()).get("pad_token_id") or 0
    tokenizer.enable_padding(pad_id=int(pad_id), direction="right")
    return tokenizer


def tokenize(tokenizer: Any, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Right-padded int64 `input_ids` and `attention_mask` (B, T), as the graph takes them."""
    encodings = tokenizer.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


def register_fastembed(folder: str | Path, name: str | None = None, int8: bool = False) -> str:
    """Register an ONNX export with fastembed; returns the model name for `TextEmbedding(name,
    specific_model_path=folder)`.

    The graph already pools and normalises, so fastembed is told to read `sentence_embedding` as it is
    (`PoolingType.DISABLED`, no normalisation). fastembed does not add prompts: prefix queries with
    `OnnxEmbedder(folder).prompts["query"]` yourself.
    """
    try:
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType
    except ModuleNotFoundError as err:  # not in the serve extra: fastembed pins huggingface_hub < 2
        raise ModuleNotFoundError(
            "register_fastembed needs fastembed: pip install fastembed (it pins huggingface_hub < 2)", name="fastembed"
        ) from err

    setting = read_setting(folder)
    kind = "int8" if int8 else "fp32"
    if kind not in setting["files"]:
        raise ValueError(f"{folder} has no {kind} model; it has {sorted(setting['files'])}")
    name = name or f"mlembed/{Path(folder).resolve().name}-{kind}"
    if any(m["model"].lower() == name.lower() for m in TextEmbedding.list_supported_models()):
        return name  # registered before (fastembed keeps a process-wide registry)
    model_file = setting["files"][kind]
    extra = [p.name for p in (Path(folder) / model_file).parent.glob(Path(model_file).name + ".data")]
    TextEmbedding.add_custom_model(
        model=name,
        pooling=PoolingType.DISABLED,
        normalization=False,
        sources=ModelSource(url=Path(folder).resolve().as_uri()),  # never fetched: the files are given by path
        dim=int(setting["dim"]),
        model_file=model_file,
        additional_files=extra,
        output_name=OUTPUT_NAME,
    )
    return name
