"""The remote-code files as transformers sees them: only what a Hub user is sure to have, at any depth."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import ROOT
from transformers.dynamic_module_utils import get_imports

# What a Hub user has: the standard library, torch, transformers and what transformers itself requires.
ALLOWED = {"torch", "transformers", "safetensors", "numpy", "configuration_mlembed", "modeling_mlembed"}


@pytest.mark.parametrize("name", ["modeling_mlembed.py", "configuration_mlembed.py"])
def test_remote_code_imports_only_what_every_user_has(name):
    """transformers' own scan (`get_imports`: imports at any depth, `try` blocks skipped) decides what a user of
    `trust_remote_code=True` must have installed; anything else makes the folder unloadable for them."""
    found = set(get_imports(ROOT / name))
    extra = sorted(found - ALLOWED - set(sys.stdlib_module_names))
    assert not extra, f"{name} imports {extra}: transformers refuses to load it where they are not installed"


@pytest.mark.parametrize("kind", ["bert", "qwen3"])
def test_loading_gives_the_class_the_backbones_prefix_for_the_call(kind, tmp_path, monkeypatch):
    """transformers < 4.50 matches checkpoint names against the class's `base_model_prefix`: with `model` for a BERT
    backbone (`bert.*`) it loaded none of the backbone's weights and reported nothing missing (NaN vectors on
    4.48.3). Loading must give the class the backbone's prefix for the call and restore it afterwards."""
    from conftest import tiny_model
    from transformers import PreTrainedModel

    from modeling_mlembed import MLEmbedModel

    model = tiny_model(kind)
    model.save_pretrained(tmp_path)
    seen = []
    load = PreTrainedModel.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(cls.base_model_prefix)
        return load(cls, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(spy))
    loaded = MLEmbedModel.from_pretrained(tmp_path)
    assert seen == [model.base_model_prefix] == [loaded.base_model_prefix]
    assert MLEmbedModel.base_model_prefix == "model"  # restored
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
