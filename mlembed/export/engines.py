"""What serving engines read from a model folder, written the way they parse it.

Every export (compat, slim `--compat`, hub, onnx) calls `write_engine_files`, so one setting is described once:

* `config.json` gets `matryoshka_dimensions` (the trained dims up to the exported size, that size included) and
  `is_matryoshka: true`. vLLM and SGLang accept an OpenAI `dimensions` parameter only with one of them (and only a
  listed value when a list is given), then truncate and L2-normalise: exactly our `dim=`. It also gets the rotary
  settings in transformers 4's spelling (`legacy_rope_keys`) for engines still on transformers 4.
* The sentence-transformers module files in their classic layout: `modules.json` typed
  `sentence_transformers.models.Transformer / Pooling / Normalize`, `1_Pooling/config.json` with one
  `pooling_mode_*: true`, `sentence_bert_config.json` with `max_seq_length`, and `config_sentence_transformers.json`
  with `prompts` and `default_prompt_name`. vLLM matches those exact module type names and takes the pooling from
  the `pooling_mode_*` key set to true; text-embeddings-inference (TEI) refuses to start without the
  `pooling_mode_cls_token` / `pooling_mode_mean_tokens` booleans and `max_seq_length`, and takes the prompts from
  `config_sentence_transformers.json`. sentence-transformers 6 saves a newer layout (module paths under
  `sentence_transformers.base`, `"pooling_mode": "lasttoken"`, the length only in the tokenizer) that neither engine
  parses, but still loads the classic one (tested), so that is the one written here.
* The tokenizer appends EOS itself for decoders (last-token pooling needs it; engines tokenise with
  `tokenizer.json` alone), records `model_max_length` (fastembed refuses a tokenizer without a finite one) and
  names a class transformers 4 knows (`save_tokenizer`).

Standard library only: the compat export needs it without the `st` extra.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# our pooling name -> the classic sentence-transformers key set to true (what TEI and vLLM read)
POOLING_KEYS = {
    "last_token": "pooling_mode_lasttoken",
    "mean": "pooling_mode_mean_tokens",
    "cls": "pooling_mode_cls_token",
}
_ALL_POOLING_KEYS = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)
ST_MODULE_TYPES = {
    "transformer": "sentence_transformers.models.Transformer",
    "pooling": "sentence_transformers.models.Pooling",
    "normalize": "sentence_transformers.models.Normalize",
}
ENGINE_CONFIG_KEYS = ("matryoshka_dimensions", "is_matryoshka")
ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json")
# What transformers 5's `save_pretrained` writes into `tokenizer_config.json` that is no tokenizer setting: how the
# tokenizer was loaded (`is_local`, `local_files_only`) and call arguments copied from `tokenizer.json`'s truncation
# and padding sections (which keeps them itself). Nothing reads them back as settings; they would tell every user of
# an uploaded folder that it is local, and transformers 4 keeps them as unknown init arguments.
NOT_TOKENIZER_SETTINGS = (
    "is_local",
    "local_files_only",
    "max_length",
    "stride",
    "truncation_strategy",
    "pad_to_multiple_of",
    "pad_token_type_id",
)


def matryoshka_keys(dims: Sequence[int], size: int) -> dict[str, Any]:
    """The engine keys for a model whose output has `size` dims: the trained dims up to it, `size` included."""
    return {"matryoshka_dimensions": sorted({d for d in dims if d <= size} | {size}), "is_matryoshka": True}


def write_engine_files(out: str | Path, config: Any, max_seq_length: int, dim: int | None = None) -> dict[str, Any]:
    """Write the engine keys into `out/config.json` and the sentence-transformers module files; returns the keys.

    Args:
        out: an exported folder with its `config.json` already written.
        config: the ML-Embed config of the source (its `matryoshka_dims`, `pooling`, `normalize`, `prompts`,
            `hidden_size`).
        dim: the output size of the exported setting (`None`: the full hidden size). A plain backbone still returns
            the full size; `matryoshka_dimensions` then lists only the dims up to `dim`, so engines that check the
            list refuse larger requests.
        max_seq_length: tokens per text the export records (`mlembed.export.convert.export_max_seq_length`).
    """
    out = Path(out)
    size = int(dim or config.hidden_size)
    keys = matryoshka_keys(config.matryoshka_dims, size)
    update_config_json(out, keys | legacy_rope_keys(json.loads((out / "config.json").read_text())))
    write_sentence_transformers_files(
        out,
        embedding_dim=int(config.hidden_size),
        pooling=config.pooling,
        normalize=bool(config.normalize),
        prompts=dict(config.prompts or {}),
        max_seq_length=max_seq_length,
    )
    return keys


def legacy_rope_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    """`rope_theta` (and `rope_scaling`) as transformers 4 reads them, from transformers 5's `rope_parameters`.

    Readers on transformers 4 (infinity pins transformers < 5 and sentence-transformers 3) ignore
    `rope_parameters` and would fall back to the class default theta (10,000 for Qwen3; the released Qwen3 models
    use 1,000,000). transformers 5 reads `rope_parameters` and ignores the top-level keys, so both agree.
    """
    rope = config.get("rope_parameters")
    if not isinstance(rope, Mapping) or "rope_theta" not in rope or "rope_theta" in config:
        return {}
    keys: dict[str, Any] = {"rope_theta": rope["rope_theta"]}
    if rope.get("rope_type", "default") != "default":
        keys["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    return keys


def update_config_json(out: str | Path, keys: Mapping[str, Any]) -> None:
    """Add `keys` to a folder's `config.json` (sorted, as the Hub folder writes it)."""
    path = Path(out) / "config.json"
    config = json.loads(path.read_text())
    config.update(keys)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_sentence_transformers_files(
    out: str | Path,
    embedding_dim: int,
    pooling: str,
    normalize: bool,
    prompts: Mapping[str, str],
    max_seq_length: int,
    default_prompt_name: str | None = None,
) -> None:
    """The classic sentence-transformers module files (Transformer -> Pooling -> Normalize), built-in modules only."""
    if pooling not in POOLING_KEYS:
        raise ValueError(f"pooling must be one of {sorted(POOLING_KEYS)}, got {pooling!r}")
    if default_prompt_name is not None and default_prompt_name not in prompts:
        raise ValueError(f"default_prompt_name must be one of {sorted(prompts)} or None, got {default_prompt_name!r}")
    out = Path(out)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": ST_MODULE_TYPES["transformer"]},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": ST_MODULE_TYPES["pooling"]},
    ]
    if normalize:  # a module without a config: no folder (the Hub keeps no empty folders either)
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": ST_MODULE_TYPES["normalize"]})
    pooling_config = {"word_embedding_dimension": int(embedding_dim)}
    pooling_config.update({key: key == POOLING_KEYS[pooling] for key in _ALL_POOLING_KEYS})
    pooling_config["include_prompt"] = True  # the prompt is part of the pooled text, as in training
    files = {
        "modules.json": modules,
        "1_Pooling/config.json": pooling_config,
        "sentence_bert_config.json": {"max_seq_length": int(max_seq_length), "do_lower_case": False},
        "config_sentence_transformers.json": {
            "prompts": dict(prompts),
            "default_prompt_name": default_prompt_name,
            "similarity_fn_name": "cosine",
        },
    }
    for name, content in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(json.dumps(content, indent=2) + "\n")


def save_tokenizer(tokenizer: Any, out: str | Path, max_seq_length: int, append_eos: bool = False) -> None:
    """Save a tokenizer whose `model_max_length` is the model's, so plain tokenizer users and engines truncate alike
    (fastembed refuses a tokenizer without a finite one); for decoders served by engines (`append_eos`) EOS is
    appended by `tokenizer.json` itself; the class name is one transformers 4 knows too.

    With `add_eos_token` the fast tokenizer's post-processor appends EOS and truncation keeps room for it, which is
    what `tokenize_with_eos` does for the elastic model. transformers 5 saves a generic fast tokenizer as
    `TokenizersBackend`, a name transformers 4 (infinity's) cannot load; `PreTrainedTokenizerFast` loads in both.
    """
    if append_eos:
        tokenizer.add_eos_token = True
    tokenizer.model_max_length = int(max_seq_length)
    save_tokenizer_settings(tokenizer, out)
    path = Path(out) / "tokenizer_config.json"
    config = json.loads(path.read_text())
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        path.write_text(json.dumps(config, indent=2) + "\n")


def save_tokenizer_settings(tokenizer: Any, out: str | Path) -> None:
    """`tokenizer.save_pretrained(out)` with only tokenizer settings in `tokenizer_config.json`
    (`NOT_TOKENIZER_SETTINGS` left out): what every folder ML-Embed writes carries."""
    tokenizer.save_pretrained(out)
    path = Path(out) / "tokenizer_config.json"
    config = json.loads(path.read_text())
    if any(key in config for key in NOT_TOKENIZER_SETTINGS):
        kept = {key: value for key, value in config.items() if key not in NOT_TOKENIZER_SETTINGS}
        path.write_text(json.dumps(kept, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
