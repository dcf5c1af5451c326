"""sentence-transformers integration: the elastic model behind the usual `SentenceTransformer` API.

Two ways in, both sentence-transformers' own idioms:

* `SentenceTransformer(repo, truncate_dim=256)`: stock modules only (no remote code). The full depth and rank,
  the first 256 dims (cosine similarity is exact; pass `normalize_embeddings=True` for unit vectors).
* `SentenceTransformer(repo, trust_remote_code=True, truncate_dim=256,
  config_kwargs={"default_layers": 16, "default_rank": 256})`: the elastic model with a chosen depth and MEL
  rank. `load()` below is that call plus a check that the elastic model really was loaded (the stock path would
  ignore `config_kwargs` it does not know), and `set_setting()` changes depth and rank on a loaded model.
"""

from __future__ import annotations

from typing import Any

_SETTING_KEYS = {"layers": "default_layers", "rank": "default_rank"}


def elastic_module(model: Any) -> Any:
    """The `MLEmbedModel` inside a SentenceTransformer, or a clear error when it was loaded with stock code."""
    auto_model = getattr(model[0], "auto_model", None)
    if auto_model is None or not hasattr(auto_model, "resolve_axes"):
        raise ValueError(
            f"this SentenceTransformer runs a stock {type(auto_model).__name__}, not the elastic ML-Embed model: "
            "load it with trust_remote_code=True (or mlembed.st.load) to choose layers and rank"
        )
    return auto_model


def load(
    model_name_or_path: str,
    layers: int | None = None,
    rank: int | None = None,
    truncate_dim: int | None = None,
    **kwargs: Any,
) -> Any:
    """`SentenceTransformer` with the elastic model at (`layers`, `rank`); `truncate_dim` as usual.

    Values are checked against the model (errors list the allowed range) when it loads.
    """
    from sentence_transformers import SentenceTransformer

    config_kwargs = dict(kwargs.pop("config_kwargs", None) or {})
    config_kwargs.update({_SETTING_KEYS[k]: v for k, v in {"layers": layers, "rank": rank}.items() if v is not None})
    model = SentenceTransformer(
        model_name_or_path, trust_remote_code=True, truncate_dim=truncate_dim, config_kwargs=config_kwargs, **kwargs
    )
    elastic_module(model)
    return model


def set_setting(model: Any, layers: int | None = None, rank: int | None = None) -> None:
    """Change the depth and MEL rank a loaded elastic SentenceTransformer uses (`None` = the full setting)."""
    auto_model = elastic_module(model)
    auto_model.resolve_axes(layers, None, rank)  # validate before changing anything
    auto_model.config.default_layers = layers
    auto_model.config.default_rank = rank
