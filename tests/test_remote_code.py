"""The remote-code files as transformers sees them: only what a Hub user is sure to have, at any depth."""

from __future__ import annotations

import sys

import pytest
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
