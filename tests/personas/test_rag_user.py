"""A RAG framework user's environment: LangChain, LlamaIndex, Haystack, Chroma and txtai on the current
sentence-transformers and transformers; no ML-Embed package.

Runs the snippets of `docs/clients.md` as written, in a folder holding the page's `ml-embed-mini` (a Hub folder) and
`ml-embed-mini-3-64` (its cut setting, written by the page's `mlembed export` command), and again with the cut folder
in their place, against the vectors the package computed (`build_fixtures.py`: the elastic model at `dim=96`, full
and at `layers=3, rank=64`). Run by `.ci/run` in a fresh virtual environment, from outside the repository, with
`--noconftest`; `HF_HUB_OFFLINE=1`.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from clients_page import FOLDERS, PAGE, run_snippet, snippets

FIXTURES = Path(os.environ["PERSONA_FIXTURES"]) / "clients"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
LIBRARIES = {"LangChain": "langchain_huggingface", "LlamaIndex": "llama_index.embeddings.huggingface"}
LIBRARIES |= {"Haystack": "haystack_integrations", "Chroma": "chromadb", "txtai": "txtai"}
# as in test_hub_user.py: vectors from another environment and process; a snippet that drops the prompt or applies it
# twice is off by more than 0.1 on this model, and the cut setting by more than 0.1 from the full one
ATOL = 1e-4


def test_this_is_a_rag_environment_without_ml_embed():
    for name in ("mlembed", "modeling_mlembed", "configuration_mlembed"):
        assert importlib.util.find_spec(name) is None, f"{name} is installed: not a RAG user's environment"
    for module in LIBRARIES.values():
        assert importlib.util.find_spec(module.split(".")[0]) is not None, module
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_the_page_has_a_snippet_for_every_library_and_the_cut_command():
    assert set(LIBRARIES) | {"infinity"} <= set(snippets())
    cut = EXPECTED["cut"]
    command = "mlembed export ml-embed-mini ml-embed-mini-3-64 --mode slim --layers {layers} --rank {rank} --compat"
    assert command.format(**cut) in PAGE.read_text(encoding="utf-8")  # what build_fixtures.py ran


def test_the_cut_setting_is_far_from_the_full_one():
    """The two expected sets differ far beyond ATOL, so a snippet that ignored the folder would fail."""
    full, cut = (np.array(EXPECTED[name]["query"]) for name in FOLDERS)
    assert np.abs(full - cut).max() > 100 * ATOL


@pytest.mark.parametrize("folder", FOLDERS)
@pytest.mark.parametrize("library", list(LIBRARIES))
def test_snippet_gives_the_elastic_model_vectors(library, folder, tmp_path, monkeypatch):
    if library == "Chroma":  # in-memory clients of one process share their collections: start from none
        from chromadb.api.client import SharedSystemClient

        SharedSystemClient.clear_system_cache()
    namespace = run_snippet(snippets()[library], folder, FIXTURES, tmp_path, monkeypatch)
    assert (namespace["query"], namespace["documents"]) == (EXPECTED["query"], EXPECTED["documents"])
    query_vector = np.asarray(namespace["query_vector"], dtype=np.float32)
    doc_vectors = np.asarray(namespace["doc_vectors"], dtype=np.float32)
    assert query_vector.shape == (EXPECTED["dim"],) and doc_vectors.shape == (2, EXPECTED["dim"])
    np.testing.assert_allclose(query_vector, EXPECTED[folder]["query"], atol=ATOL, err_msg=f"{library} {folder}")
    np.testing.assert_allclose(doc_vectors, EXPECTED[folder]["documents"], atol=ATOL, err_msg=f"{library} {folder}")


def test_the_elastic_model_snippet_gives_both_settings(tmp_path, monkeypatch):
    """The page's reference vectors, by `AutoModel` with the folder's remote code: the full and the cut setting."""
    code = snippets()["The elastic model, for comparison"]
    namespace = run_snippet(code, FOLDERS[0], FIXTURES, tmp_path, monkeypatch)
    np.testing.assert_allclose(namespace["query_vector"], EXPECTED[FOLDERS[0]]["query"], atol=ATOL)
    np.testing.assert_allclose(namespace["cut_query_vector"], EXPECTED[FOLDERS[1]]["query"], atol=ATOL)
