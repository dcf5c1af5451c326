"""A transformers 4 user's environment: infinity-emb's torch engine, which pins sentence-transformers < 4 and so
transformers 4.x; no ML-Embed package.

The remote-code files shipped in every folder must load there too (`PretrainedConfig`, a config without dataclass
fields), and infinity turns remote code on by default, so with its defaults it runs the elastic model. Run by
`.ci/run` in a fresh virtual environment, from outside the repository, with `--noconftest`, after
`build_fixtures.py` wrote `$PERSONA_FIXTURES` (vectors computed by the package on transformers 5);
`HF_HUB_CACHE` points at its private cache, `HF_HUB_OFFLINE=1`.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from clients_page import FOLDERS, run_snippet, snippets
from sentence_transformers import SentenceTransformer
from transformers import AutoConfig, AutoModel

FIXTURES = Path(os.environ["PERSONA_FIXTURES"])
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
REPO_ID, TEXTS = EXPECTED["repo_id"], EXPECTED["texts"]
SOURCES = {"repo id": REPO_ID, "local path": str(FIXTURES / "hub")}
ATOL = 1e-4  # as in test_hub_user.py: vectors from another process and environment; settings differ by > 1e-2


def expected(layers=None, dim=None, rank=None, prompt=None, stripped=False) -> np.ndarray:
    """The package's vectors; `stripped`: for the texts without surrounding whitespace, which is what
    sentence-transformers < 5 (and so infinity) encodes: it strips every text before tokenising."""
    want = (layers, dim, rank, prompt)
    rows = EXPECTED["stripped" if stripped else "settings"]
    row = next(s for s in rows if (s["layers"], s["dim"], s["rank"], s["prompt"]) == want)
    return np.array(row["embeddings"], dtype=np.float32)


def test_this_is_a_transformers_4_environment_without_ml_embed():
    assert importlib.metadata.version("transformers").startswith("4.")
    assert importlib.metadata.version("sentence-transformers").startswith("3.")
    for name in ("mlembed", "modeling_mlembed", "configuration_mlembed"):
        assert importlib.util.find_spec(name) is None, f"{name} is installed: not a Hub user's environment"
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_the_fixture_has_a_text_that_stripping_changes():
    """The last text ends in a space: encoding it unstripped gives other vectors, so the ST rows below test the
    stripped texts on purpose."""
    assert any(t != t.strip() for t in TEXTS)
    assert np.abs(expected() - expected(stripped=True)).max() > 100 * ATOL


@pytest.mark.parametrize("source", list(SOURCES))
def test_elastic_model_with_remote_code_on_transformers_4(source):
    model = AutoModel.from_pretrained(SOURCES[source], trust_remote_code=True)
    assert type(model).__name__ == "MLEmbedModel" and type(model).__module__.startswith("transformers_modules")
    assert model.config.prompts and model.config.exit_layers  # the config's fields filled and validated
    for row in EXPECTED["settings"]:
        setting = {k: row[k] for k in ("layers", "dim", "rank")}
        got = model.encode(TEXTS, prompt_name=row["prompt"], **setting)
        np.testing.assert_allclose(got, np.array(row["embeddings"]), atol=ATOL, err_msg=f"{source} {row}")


def test_the_config_fills_and_checks_its_fields_as_on_transformers_5():
    """transformers 4 configs are no dataclasses: the config's own `__init__` fills the defaults and validates."""
    config_class = type(AutoConfig.from_pretrained(SOURCES["local path"], trust_remote_code=True))
    fields = json.loads((FIXTURES / "hub" / "config.json").read_text())
    for key in ("exit_layers", "matryoshka_dims", "prompts", "pooling", "auto_map", "model_type"):
        fields.pop(key)
    config = config_class(**fields)
    assert (config.exit_layers, config.matryoshka_dims, config.pooling) == ([1, 2, 4], [8, 16, 32], "last_token")
    assert set(config.prompts) == {"query", "document"}
    with pytest.raises(ValueError, match=r"exit_layers must lie in 1\.\.4, got \[1, 9\]"):
        config_class(**fields, exit_layers=[1, 9])


def test_bad_settings_are_refused_with_the_allowed_values():
    model = AutoModel.from_pretrained(SOURCES["local path"], trust_remote_code=True)
    with pytest.raises(ValueError, match=r"layers must be an integer in 1\.\.4"):
        model.encode(TEXTS, layers=5)
    allowed = r"layers must be an integer in 1\.\.4 \(trained values: \[1, 2, 4\]\), got 9"
    with pytest.raises(ValueError, match=allowed):
        AutoModel.from_pretrained(SOURCES["local path"], trust_remote_code=True, default_layers=9)


def test_sentence_transformers_3_stock_modules():
    st = SentenceTransformer(SOURCES["local path"], truncate_dim=16)
    assert type(st[0].auto_model).__name__ == "Qwen3Model"
    got = st.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(got, expected(dim=16, stripped=True), atol=ATOL)
    got = st.encode(TEXTS, prompt_name="query", normalize_embeddings=True)
    np.testing.assert_allclose(got, expected(dim=16, prompt="query", stripped=True), atol=ATOL)


def test_sentence_transformers_3_elastic_setting():
    setting = {"default_layers": 1, "default_rank": 8}
    st = SentenceTransformer(SOURCES["repo id"], trust_remote_code=True, truncate_dim=8, config_kwargs=setting)
    assert type(st[0].auto_model).__name__ == "MLEmbedModel"
    got = st.encode(TEXTS, prompt_name="query", normalize_embeddings=True)
    np.testing.assert_allclose(got, expected(1, 8, 8, "query", stripped=True), atol=ATOL)


def test_infinity_with_its_defaults_runs_the_elastic_model():
    """infinity's Python engine, every argument left at its default (torch engine, remote code on)."""
    from infinity_emb import AsyncEmbeddingEngine, EngineArgs

    prompt = json.loads((FIXTURES / "hub" / "config_sentence_transformers.json").read_text())["prompts"]["query"]
    engine = AsyncEmbeddingEngine.from_args(EngineArgs(model_name_or_path=SOURCES["local path"]))

    async def embed() -> tuple[np.ndarray, np.ndarray]:
        async with engine:
            documents, _ = await engine.embed(sentences=TEXTS)
            queries, _ = await engine.embed(sentences=[prompt + t for t in TEXTS])  # infinity applies no prompt
        return np.array(documents), np.array(queries)

    documents, queries = asyncio.run(embed())
    assert [type(m[0].auto_model).__name__ for m in engine._model_replicas] == ["MLEmbedModel"]
    np.testing.assert_allclose(documents, expected(stripped=True), atol=ATOL)
    np.testing.assert_allclose(queries, expected(prompt="query", stripped=True), atol=ATOL)


@pytest.mark.parametrize("folder", FOLDERS)
def test_the_infinity_snippet_of_the_clients_page(folder, tmp_path, monkeypatch):
    """docs/clients.md's infinity engine snippet, as written and with the cut folder, gives the elastic model's
    vectors at dim 96 (its texts have no surrounding whitespace, which sentence-transformers 3 would strip)."""
    clients = FIXTURES / "clients"
    want = json.loads((clients / "expected.json").read_text())
    namespace = run_snippet(snippets()["infinity"], folder, clients, tmp_path, monkeypatch)
    assert all(t == t.strip() for t in [namespace["query"], *namespace["documents"]])
    np.testing.assert_allclose(namespace["query_vector"], want[folder]["query"], atol=ATOL)
    np.testing.assert_allclose(namespace["doc_vectors"], want[folder]["documents"], atol=ATOL)
