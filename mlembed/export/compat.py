"""ML-Embed folder -> plain backbone folder at one (layers, rank): stock code loads it, serving engines serve it."""

from __future__ import annotations

from pathlib import Path

from mlembed.export import engines
from mlembed.export.convert import export_max_seq_length, load_tokenizer, stock_backbone
from mlembed.export.engines import save_tokenizer
from modeling_mlembed import MLEmbedModel


def export_compat(
    src: str | Path,
    out: str | Path,
    layers: int | None = None,
    rank: int | None = None,
    dtype: str = "auto",
    dim: int | None = None,
    max_seq_length: int | None = None,
) -> Path:
    """ML-Embed folder -> plain backbone folder (stock `AutoModel`, no remote code) at (layers, rank), ready to serve.

    Besides the weights (dense E = U[:, :rank] V[:rank], the first `layers` layers) it writes what engines read
    (`mlembed.export.engines`): `matryoshka_dimensions` / `is_matryoshka` in `config.json` (the trained dims up to
    `dim`), the sentence-transformers module files (pooling, normalisation, prompts, max length) and a tokenizer
    that appends EOS itself (decoders). `dtype`: of the written weights (`auto` keeps the source's). `max_seq_length`
    (default: the source's) is written into `config.json`, `sentence_bert_config.json` and the tokenizer."""
    model = MLEmbedModel.from_pretrained(src, dtype=dtype)
    _, dim, _ = model.resolve_axes(layers, dim, rank)  # every axis checked before anything is written
    out = Path(out)
    length = export_max_seq_length(model.config, max_seq_length)
    stock = stock_backbone(model, layers, rank)
    stock.config.max_seq_length = length
    stock.save_pretrained(out)
    save_tokenizer(load_tokenizer(src), out, length, append_eos=bool(model.config.append_eos))
    engines.write_engine_files(out, model.config, dim=dim, max_seq_length=length)
    return out
