"""sentence-transformers and the Hub layout, exactly as users type it, offline from an HF cache snapshot.

One fresh process (HF_HUB_OFFLINE=1, an empty modules cache) runs every user-facing call once and reports
numbers; the tests below check them. The model is a tiny random Qwen3 with hidden 384, so `truncate_dim=256`
really truncates.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types

import pytest
import torch
from conftest import tiny_tokenizer
from transformers import AutoModel, AutoTokenizer, Qwen3Config

from mlembed.export import convert, hub

REPO = "ml-embed/8b"
SCRIPT = r"""
import json, sys
import numpy as np
from sentence_transformers import SentenceTransformer
from transformers import AutoModel
import mlembed.st

out, texts = {}, ["an elastic embedding model", "short", "Zażółć gęślą jaźń"]
REPO, work = sys.argv[1], sys.argv[2]
st = SentenceTransformer(REPO, truncate_dim=256)                    # exactly as users type it
out["stock_class"] = type(st[0].auto_model).__module__
elastic = AutoModel.from_pretrained(REPO, trust_remote_code=True)
out["elastic_class"] = type(elastic).__module__
e = st.encode(texts, normalize_embeddings=True)
raw = st.encode(texts)
ref = elastic.encode(texts, dim=256)
out["shape"] = list(e.shape)
out["st_vs_elastic"] = float(abs(e - ref).max())
out["raw_norms"] = [float(x) for x in np.linalg.norm(raw, axis=1)]
out["cosine_vs_elastic"] = float(abs(st.similarity(raw, raw).numpy() - ref @ ref.T).max())
out["query_vs_prompt"] = float(abs(st.encode_query(texts, normalize_embeddings=True)
                                   - elastic.encode(texts, dim=256, prompt_name="query")).max())
out["document_vs_plain"] = float(abs(st.encode_document(texts, normalize_embeddings=True) - ref).max())
out["prompts"] = st.prompts
try:
    mlembed.st.set_setting(st, layers=1)
except ValueError as err:
    out["stock_set_setting_error"] = str(err)

el = mlembed.st.load(REPO, layers=1, rank=32, truncate_dim=16)
ref_el = elastic.encode(texts, layers=1, rank=32, dim=16)
out["elastic_st_vs_model"] = float(abs(el.encode(texts, normalize_embeddings=True) - ref_el).max())
mlembed.st.set_setting(el, layers=2, rank=64)
out["set_setting_vs_model"] = float(abs(el.encode(texts, normalize_embeddings=True)
                                        - elastic.encode(texts, layers=2, rank=64, dim=16)).max())
try:
    mlembed.st.load(REPO, layers=7)
except ValueError as err:
    out["bad_layers_error"] = str(err)

mlembed.st.set_setting(el, layers=1, rank=32)
el.save(f"{work}/saved")                                            # round trip after trust_remote_code
again = SentenceTransformer(f"{work}/saved", trust_remote_code=True, truncate_dim=16)
out["resaved_elastic_vs_model"] = float(abs(again.encode(texts, normalize_embeddings=True) - ref_el).max())
try:
    SentenceTransformer(f"{work}/saved")
except Exception as err:
    out["saved_stock_error"] = f"{type(err).__name__}: {err}"

st.save(f"{work}/stock-resaved")                                    # re-save after a stock load
back = SentenceTransformer(f"{work}/stock-resaved", truncate_dim=256)
out["stock_resaved_vs_elastic"] = float(abs(back.encode(texts, normalize_embeddings=True) - ref).max())
try:
    AutoModel.from_pretrained(f"{work}/stock-resaved", trust_remote_code=True)
except Exception as err:
    out["stock_resaved_remote_error"] = f"{type(err).__name__}: {err}"

long_texts = ["a long text that goes on and on " * 6, "tiny"]            # 192 characters: tokens in the char tokenizer
st_short = SentenceTransformer(f"{work}/hub-short")                      # exported with max_seq_length=12
el_short = AutoModel.from_pretrained(f"{work}/hub-short", trust_remote_code=True)
out["short_st_max_seq_length"] = st_short.max_seq_length
out["short_st_vs_elastic"] = float(abs(st_short.encode(long_texts, normalize_embeddings=True)
                                       - el_short.encode(long_texts)).max())
out["short_cut_changes_the_vector"] = float(abs(el_short.encode(long_texts)[0]
                                                - el_short.encode(long_texts, max_length=256)[0]).max())
st_old = SentenceTransformer(f"{work}/hub-old")                          # an older export: no length recorded
el_old = AutoModel.from_pretrained(f"{work}/hub-old", trust_remote_code=True)
out["old_st_vs_elastic"] = float(abs(st_old.encode(long_texts, normalize_embeddings=True)
                                     - el_old.encode(long_texts)).max())
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("st")
    torch.manual_seed(0)
    backbone = AutoModel.from_config(
        Qwen3Config(
            hidden_size=384,
            num_hidden_layers=2,
            vocab_size=99,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=96,
            intermediate_size=512,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    backbone.save_pretrained(tmp / "base")
    tiny_tokenizer().save_pretrained(tmp / "base")
    convert.convert_base(tmp / "base", tmp / "ml", rank=64)
    hub.export_hub(tmp / "ml", tmp / "hub", repo_id=REPO)
    snapshot = hub.install_into_cache(tmp / "hub", REPO, cache_dir=tmp / "cache")
    hub.export_hub(tmp / "ml", tmp / "hub-short", max_seq_length=12)
    shutil.copytree(tmp / "hub", tmp / "hub-old")  # as exports were before max_seq_length was recorded
    for name, key in (("config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        data = json.loads((tmp / "hub-old" / name).read_text())
        data.pop(key)
        (tmp / "hub-old" / name).write_text(json.dumps(data))
    (tmp / "hub-old" / "sentence_bert_config.json").write_text(json.dumps({"do_lower_case": False}))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp / "cache"),
        "HF_MODULES_CACHE": str(tmp / "modules"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, REPO, str(tmp)], env=env, cwd=tmp, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :]) | {"hub": tmp / "hub", "snapshot": snapshot}


def test_hub_folder_layout(report):
    files = {p.name for p in report["hub"].iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "mel.safetensors",
        "modules.json",
        "config_sentence_transformers.json",
        "sentence_bert_config.json",
        "modeling_mlembed.py",
        "configuration_mlembed.py",
        "tokenizer.json",
    } <= files
    config = json.loads((report["hub"] / "config.json").read_text())
    assert config["model_type"] == "qwen3" and config["architectures"] == ["Qwen3Model"]
    assert config["auto_map"]["AutoModel"] == "modeling_mlembed.MLEmbedModel"  # loads from its path before a push
    installed = json.loads((report["snapshot"] / "config.json").read_text())  # what the Hub (and its cache) holds
    assert installed["auto_map"]["AutoModel"] == f"{REPO}--modeling_mlembed.MLEmbedModel"
    modules = json.loads((report["hub"] / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    assert all(m["type"].startswith("sentence_transformers.") for m in modules)  # built-in modules: no remote code
    pooling = json.loads((report["hub"] / "1_Pooling" / "config.json").read_text())
    # the classic layout serving engines parse (mlembed.export.engines; checked further in tests/test_serving.py)
    assert [k for k, v in pooling.items() if v is True] == ["pooling_mode_lasttoken", "include_prompt"]
    assert config["matryoshka_dimensions"][-1] == 384 and config["is_matryoshka"] is True  # full size included
    st_config = json.loads((report["hub"] / "config_sentence_transformers.json").read_text())
    assert (
        st_config["prompts"]["query"].startswith("Instruct: Given a question")
        and st_config["prompts"]["document"] == ""
    )
    assert st_config["similarity_fn_name"] == "cosine"
    tokenizer = AutoTokenizer.from_pretrained(report["hub"])  # what sentence-transformers tokenises with
    eos = tokenizer.eos_token_id
    assert tokenizer("abc")["input_ids"][-1] == eos
    truncated = tokenizer(["a long text " * 20, "ab"], truncation=True, max_length=8, padding=True)
    assert truncated["input_ids"][0][-1] == eos and len(truncated["input_ids"][0]) == 8
    assert truncated["input_ids"][1][2] == eos and truncated["attention_mask"][1] == [1, 1, 1, 0, 0, 0, 0, 0]


def test_stock_sentence_transformer_matches_the_elastic_model(report):
    assert report["stock_class"].startswith("transformers.models.qwen3")
    assert report["elastic_class"].startswith("transformers_modules")
    assert report["shape"] == [3, 256]
    assert report["st_vs_elastic"] < 1e-5
    # truncate_dim does not re-normalise: raw vectors are shorter than 1, cosine is unaffected
    assert all(n < 0.9999 for n in report["raw_norms"])
    assert report["cosine_vs_elastic"] < 1e-4  # cosines of float32 vectors, 256 terms


def test_prompts_from_the_config(report):
    assert report["query_vs_prompt"] < 1e-5
    assert report["document_vs_plain"] < 1e-5
    assert set(report["prompts"]) >= {"query", "document"}


def test_elastic_layers_and_rank_through_sentence_transformers(report):
    assert report["elastic_st_vs_model"] < 1e-5
    assert report["set_setting_vs_model"] < 1e-5
    assert "trust_remote_code=True" in report["stock_set_setting_error"]
    assert "layers must be an integer in 1..2" in report["bad_layers_error"]


def test_save_round_trips(report):
    assert report["resaved_elastic_vs_model"] < 1e-5
    assert "trust_remote_code=True" in report["saved_stock_error"]  # elastic-only save: stock code refuses
    assert report["stock_resaved_vs_elastic"] < 1e-5
    assert "has no MEL factors" in report["stock_resaved_remote_error"]
    assert "without trust_remote_code" in report["stock_resaved_remote_error"]


def test_push_to_hub_uploads_the_folder_with_a_qualified_auto_map(report, tmp_path, monkeypatch):
    import shutil

    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls.append(("create_repo", repo_id, private, exist_ok))

        def create_commit(self, repo_id, operations, commit_message):
            files = {op.path_in_repo: op for op in operations}
            config = json.loads(files["config.json"].path_or_fileobj)
            calls.append(("commit", repo_id, config["auto_map"]["AutoModel"], sorted(files)))
            return types.SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/abc")

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    folder = tmp_path / "hub"
    shutil.copytree(report["hub"], folder)
    before = (folder / "config.json").read_bytes()
    url = hub.push_to_hub(folder, "me/other-name", private=True)
    assert url.endswith("/commit/abc")
    assert ("create_repo", "me/other-name", True, True) in calls
    commit = next(c for c in calls if c[0] == "commit")
    assert commit[1:3] == ("me/other-name", "me/other-name--modeling_mlembed.MLEmbedModel")
    expected = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert commit[3] == expected  # every file, uploaded once
    assert (folder / "config.json").read_bytes() == before  # the local folder keeps loading from its path
    with pytest.raises(ValueError, match="repo_id must look like 'org/name'"):
        hub.push_to_hub(folder, "no-org")


def test_exported_folder_loads_from_its_path_before_it_is_pushed(report, tmp_path):
    """Offline, with an empty HF cache: the folder's own code runs, nothing is fetched from a repo."""
    code = (
        "import sys\nfrom transformers import AutoModel\n"
        "m = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "print(type(m).__name__, m.encode(['abc'], layers=1).shape)"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "empty-cache"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code, str(report["hub"])], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MLEmbedModel (1, 384)" in proc.stdout


def test_sentence_transformers_and_the_elastic_model_truncate_alike(report):
    """A text longer than the exported max_seq_length: the same cut (EOS kept) and the same vector in both."""
    assert report["short_st_max_seq_length"] == 12
    assert report["short_st_vs_elastic"] < 1e-5
    assert report["short_cut_changes_the_vector"] > 1e-3  # the text really was longer than 12 tokens


def test_an_older_folder_without_a_length_keeps_working(report):
    assert report["old_st_vs_elastic"] < 1e-5  # loads in both; texts under both fallback limits embed alike
