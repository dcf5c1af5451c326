"""docs/architecture.md stays true: every module and file it names exists, and every name it quotes is defined."""

from __future__ import annotations

import importlib
import re

import pytest
from conftest import ROOT

PAGE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
PATHS = sorted(set(re.findall(r"`(\.importlinter|\w+(?:/\w+)*(?:\.py|/))`", PAGE)))  # files and folders
# `module.Name` or `Name.attribute` references to code
DOTTED = sorted(set(re.findall(r"`((?:configuration_mlembed|modeling_mlembed)\.(?!py`)\w+(?:\.\w+)?)`", PAGE)))
NAMES = sorted(set(re.findall(r"`(MLEmbed\w+|ThreeDObjective)(?:\.(\w+))?`", PAGE)))
FUNCTIONS = ("truncate_embeddings", "tokenize_with_eos", "three_d_loss", "human_count", "resolve_axes")


def test_the_page_names_enough_to_be_checked():
    assert len(PATHS) >= 15 and DOTTED and NAMES


@pytest.mark.parametrize("path", PATHS)
def test_every_named_path_exists(path):
    candidates = [ROOT / path, ROOT / "mlembed" / path]
    assert any(p.exists() for p in candidates), f"docs/architecture.md names {path}, which does not exist"


@pytest.mark.parametrize("dotted", DOTTED)
def test_every_dotted_name_is_defined(dotted):
    module, *attributes = dotted.split(".")
    obj = importlib.import_module(module)
    for attribute in attributes:
        obj = getattr(obj, attribute)


@pytest.mark.parametrize("name, attribute", NAMES)
def test_every_class_and_method_is_defined(name, attribute):
    modules = ("modeling_mlembed", "configuration_mlembed", "mlembed.losses", "mlembed.train")
    found = [getattr(importlib.import_module(m), name) for m in modules if hasattr(importlib.import_module(m), name)]
    assert found, f"{name} is not defined"
    if attribute:
        assert hasattr(found[0], attribute), f"{name}.{attribute} is not defined"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_functions_the_page_quotes_exist(function):
    assert f"`{function}" in PAGE
    modules = ("modeling_mlembed", "mlembed.losses", "mlembed.sizes")
    assert any(hasattr(importlib.import_module(m), function) for m in modules) or hasattr(
        importlib.import_module("modeling_mlembed").MLEmbedModel, function
    )
