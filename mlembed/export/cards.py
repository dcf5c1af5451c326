"""Model cards rendered from the model's config with huggingface_hub's card tools.

Why generated: every number in a card (layers, dims, ranks, parameter counts, tensor shapes) is computed from the
config (`mlembed.sizes.parameter_counts` counts a meta-device model), so cards cannot drift from the models.

Single source of truth: the Jinja template ships inside the package (`mlembed/templates/card.md`, installed as
package data, so `render_card` works from a wheel). `model_cards/` in the repository is output only: `mlembed cards`
rewrites one card per released size there plus `template.md`, a verbatim copy of
the packaged template for people browsing the repository. A test regenerates everything and compares.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from configuration_mlembed import MLEmbedConfig
from mlembed.sizes import get_size, human_count, parameter_counts, size_config

logger = logging.getLogger(__name__)

TEMPLATE_PATH = Path(__file__).parent / "templates" / "card.md"
TAGS = (
    "sentence-transformers",
    "feature-extraction",
    "sentence-similarity",
    "text-embeddings-inference",
    "matryoshka",
    "elastic",
    "ml-embed",
    "mteb",
    "multilingual",
)
# The paper covers 282 languages; the Hub's `language` field lists the major ones plus "multilingual".
LANGUAGES = (
    "multilingual",
    *"en zh es fr de it pt nl pl ru uk cs sk sl hr sr bg ro hu el da sv no fi et lv lt ga ca eu gl".split(),
    *"tr ar he fa ur hi bn ta te mr gu kn ml pa ne si ja ko vi th id ms tl km lo my".split(),
    *"ka hy az kk uz sw am ha yo ig zu af so".split(),
)
_POOLING_TEXT = {
    "last_token": "last token (the EOS appended to every text), after the final norm",
    "mean": "mean over tokens",
    "cls": "first ([CLS]) token",
}
_BACKBONE_NAMES = {"qwen3": "Qwen3", "llama": "Llama", "bert": "BERT", "modernbert": "ModernBERT"}


def _count(n: int) -> str:
    """Exact and short: `596,049,920 (596.05M)` (the exact figure comes first; the tests parse it)."""
    return f"{n:,} ({human_count(n)})"


def _example(values: Sequence[int], preferred: int) -> int:
    """A value for the usage snippets: the largest trained value <= `preferred` below the full one, else the full."""
    below_full = [v for v in sorted(values)[:-1] if v <= preferred]
    return below_full[-1] if below_full else max(values)


def _param_rows(counts: Mapping[str, Any]) -> list[dict[str, str]]:
    """Rows of the per-rank table: the dense embedding first, then MEL ranks from the largest."""
    rows = [
        {
            "label": "dense E (compatibility mode)",
            "embedding": _count(counts["dense_embedding"]),
            "embedding_tokenizer": _count(counts["dense_embedding_tokenizer"]),
            "total": _count(counts["total"]),
            "share": f"{counts['dense_embedding_share']:.1%}",
        }
    ]
    for k in counts["mel_total"]:
        rows.append(
            {
                "label": f"MEL rank {k}",
                "embedding": _count(counts["mel_embedding"][k]),
                "embedding_tokenizer": _count(counts["mel_embedding_tokenizer"][k]),
                "total": _count(counts["mel_total"][k]),
                "share": f"{counts['mel_embedding_share'][k]:.1%}",
            }
        )
    return rows


def _hub_files(config: MLEmbedConfig, counts: Mapping[str, Any]) -> list[dict[str, str]]:
    """What a folder written by `mlembed.export.hub.export_hub` holds, with this model's shapes."""
    rows, d = counts["vocab_rows"], counts["hidden_size"]
    backbone = _BACKBONE_NAMES.get(config.backbone_type, config.backbone_type)
    files = [
        {
            "file": "`config.json`",
            "contents": f"the stock {backbone} config (`model_type: {config.backbone_type}`) plus the ML-Embed fields"
            " (axes, prompts) and `auto_map`",
            "loaded_by": "`AutoConfig` (both modes)",
        },
        {
            "file": "`model.safetensors`",
            "contents": f"the stock {backbone} checkpoint; token embedding dense ({rows:,} x {d:,})"
            + (" = U V" if config.mel_rank else ""),
            "loaded_by": "stock `AutoModel`, `SentenceTransformer` without remote code; the elastic model reads all"
            + (" but the dense embedding" if config.mel_rank else ""),
        },
    ]
    if config.mel_rank:
        r = config.mel_rank
        files.append(
            {
                "file": "`mel.safetensors`",
                "contents": f"MEL factors U ({rows:,} x {r}) and V ({r} x {d:,})",
                "loaded_by": "the elastic model (`trust_remote_code=True`)",
            }
        )
    files += [
        {
            "file": "`modeling_mlembed.py`, `configuration_mlembed.py`",
            "contents": "the elastic model and its config (torch + public transformers API only)",
            "loaded_by": "`trust_remote_code=True` (`auto_map`)",
        },
        {
            "file": "`modules.json`, `sentence_bert_config.json`, `config_sentence_transformers.json`, `1_Pooling/`",
            "contents": "built-in sentence-transformers modules: Transformer -> Pooling"
            + (" -> Normalize" if config.normalize else "")
            + "; the max length and the prompts",
            "loaded_by": "`SentenceTransformer`, text-embeddings-inference, vLLM, infinity",
        },
        {
            "file": "tokenizer files",
            "contents": "the tokenizer" + (", set to append EOS to every text" if config.append_eos else ""),
            "loaded_by": "`AutoTokenizer`, `SentenceTransformer`",
        },
    ]
    return files


def _card_data(base_model: str | None, title: str) -> ModelCardData:
    return ModelCardData(
        model_name=title,
        license="apache-2.0",
        library_name="sentence-transformers",
        pipeline_tag="sentence-similarity",
        tags=list(TAGS),
        base_model=base_model,
        language=list(LANGUAGES),
    )


def _exit_modules_text(spec: Mapping[str, Any] | None) -> str:
    """Which exits run a module of their own (`config.exit_modules`), for the card."""
    if not spec:
        return "none: every exit runs the shared layers"
    exits = ", ".join(map(str, spec["exits"]))
    if spec["kind"] == "lora":
        norm = (
            "the last norm of the exit's layer"
            if spec.get("layer_norm")
            else "the final norm, where the backbone has one"
        )
        what = f"LoRA rank {spec['rank']} on the layers up to the exit, and the exit's own copy of {norm}"
    else:
        what = f"a residual adapter of width {spec['rank']} on the exit's token states"
    small = spec.get("small_ranks")
    if small:
        size = "LoRA rank" if spec["kind"] == "lora" else "width"
        what += f" (at MEL ranks up to {small['up_to']}, a second such module of {size} {small['rank']} instead)"
    return f"exits {exits}: {what} (`layers=` of another exit runs the shared layers)"


def _template_values(config: MLEmbedConfig, counts: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the template shows about the model, computed from its config and counts."""
    heads = int(config.num_attention_heads)
    ranks = list(config.mel_ranks or [])
    positions = getattr(config, "max_position_embeddings", None)
    return {
        "backbone": _BACKBONE_NAMES.get(config.backbone_type, config.backbone_type),
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        "heads": heads,
        "kv_heads": getattr(config, "num_key_value_heads", None) or heads,
        "head_dim": getattr(config, "head_dim", None) or config.hidden_size // heads,
        "ffn": config.intermediate_size,
        "vocab_rows_text": f"{counts['vocab_rows']:,}",
        "tokenizer_rows_text": f"{counts['tokenizer_rows']:,}",
        "total_text": _count(counts["total"]),
        "non_embedding_text": _count(counts["non_embedding"]),
        "pooling_text": _POOLING_TEXT[config.pooling] + (", L2-normalised" if config.normalize else ""),
        "max_positions_text": f"{positions:,}" if positions else "n/a",
        "max_seq_length": config.sequence_length,
        "max_seq_length_text": f"{config.sequence_length:,} tokens"
        + (" (the training length)" if config.max_seq_length else " (no length recorded: the default)"),
        "normalize": config.normalize,
        "has_mel": bool(config.mel_rank),
        "exit_layers": ", ".join(map(str, config.exit_layers)),
        "exit_modules_text": _exit_modules_text(config.exit_modules),
        "dims": ", ".join(map(str, config.matryoshka_dims)),
        "ranks": ", ".join(map(str, ranks)),
        "ex_layers": _example(config.exit_layers, 16),
        "ex_dim": _example(config.matryoshka_dims, 256),
        "ex_rank": _example(ranks, 256) if ranks else None,
        "query_prompt": json.dumps((config.prompts or {}).get("query", ""), ensure_ascii=False),
        "document_prompt": json.dumps((config.prompts or {}).get("document", ""), ensure_ascii=False),
        "param_rows": _param_rows(counts),
        "hub_files": _hub_files(config, counts),
    }


def render_card(
    size_or_config: str | MLEmbedConfig,
    repo_id: str | None = None,
    eval_table: str | None = None,
    base_model: str | None = None,
    tokenizer_rows: int | None = None,
) -> ModelCard:
    """The model card of a released size (`"8B"`) or of any ML-Embed config (e.g. your own converted model).

    Args:
        size_or_config: a name from `mlembed.sizes.SIZES` or an `MLEmbedConfig`.
        repo_id: Hub id used in the snippets (default: the size's `ml-embed/<size>`, else `your-org/your-model`).
        eval_table: markdown for an "Evaluation" section; `None` leaves the section out.
        base_model: the model it was converted from (default: the size's Qwen3 parent; none for a bare config).
        tokenizer_rows: rows the tokenizer reaches (default: 151,669 for the released sizes, else the vocab rows).
    """
    size = get_size(size_or_config) if isinstance(size_or_config, str) else None
    config = size_config(size.name) if size else size_or_config
    counts = parameter_counts(size_or_config, tokenizer_rows=tokenizer_rows)
    repo_id = repo_id or (size.repo_id if size else "your-org/your-model")
    base_model = base_model or (size.base_model if size else None)
    title = f"ML-Embed-{size.name}" if size else f"ML-Embed ({repo_id.split('/')[-1]})"
    card = ModelCard.from_template(
        _card_data(base_model, title),
        template_path=str(TEMPLATE_PATH),
        title=title,
        repo_id=repo_id,
        size_name=size.name if size else title,
        assumed=bool(size and size.assumed),
        note=size.note if size else "",
        base_model_text=f"[{base_model}](https://huggingface.co/{base_model})" if base_model else "not recorded",
        eval_table=eval_table.strip() if eval_table else None,
        **_template_values(config, counts),
    )
    card.text = card.text.rstrip("\n") + "\n"  # Jinja drops the template's final newline
    return card


def write_cards(out_dir: str | Path = "model_cards", eval_tables: Mapping[str, str] | None = None) -> list[Path]:
    """(Re)write one card per released size (`<out_dir>/8b.md`, ...) and a copy of the template; returns the paths.

    `eval_tables` maps a size name to the markdown of its evaluation section.
    """
    from mlembed.sizes import FAMILY

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = {get_size(name).name: table for name, table in (eval_tables or {}).items()}
    paths = []
    for size in FAMILY:
        path = out / f"{size.slug}.md"
        render_card(size.name, eval_table=tables.get(size.name)).save(path)
        paths.append(path)
    template_copy = out / "template.md"
    shutil.copyfile(TEMPLATE_PATH, template_copy)
    paths.append(template_copy)
    logger.info("wrote %d files to %s", len(paths), out)
    return paths
