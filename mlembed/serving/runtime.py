"""Running an ONNX export (the folder `mlembed.serving.export_onnx` writes): `OnnxEmbedder` (ONNX Runtime and the
`tokenizers` library, no PyTorch model, tokenising exactly as fastembed does) and the registration with fastembed;
and what such a folder holds (file names, the setting in `config.json`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modeling_mlembed import length_sorted_batches, resolve_prompt

ONNX_FILE = "onnx/model.onnx"
ONNX_INT8_FILE = "onnx/model_quantized.onnx"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"
SETTING_KEY = "mlembed_onnx"
EXTERNAL_DATA_BYTES = 1 << 30  # the protobuf limit is 2 GB; larger graphs keep their weights beside the file


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
        """Embed raw texts; returns a float32 array (N, dim), one row per text in input order (batched by length and
        prompted as `MLEmbedModel.encode` does)."""
        prompt_text = resolve_prompt(self.prompts, prompt_name, prompt)
        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for idx in length_sorted_batches(texts, batch_size):
            batch = self.tokenize([prompt_text + texts[i] for i in idx])
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
