"""docs/architecture.md stays true: every module and file it names exists, and every name it quotes is defined."""

from __future__ import annotations

import importlib
import re
import sys

import pytest
from conftest import ROOT

import mlembed

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


@pytest.mark.parametrize("old", sorted(mlembed.MOVED))
def test_moved_modules_keep_their_old_import_path(old):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to"):
        module = importlib.import_module(old)
    for home in mlembed.MOVED[old]:
        for name, value in vars(importlib.import_module(home)).items():
            if not name.startswith("__"):
                assert getattr(module, name) is value, f"{old}.{name}"


def test_nothing_in_the_repository_imports_an_old_path():
    """The old paths are for users' code; the package, tests and benchmarks use the new homes (the personas are
    left as users wrote them)."""
    old = "|".join(re.escape(path) for path in mlembed.MOVED)
    short = "|".join(path.split(".")[1] for path in mlembed.MOVED)
    pattern = re.compile(rf"^\s*(?:(?:from|import) ({old})\b|from mlembed import .*\b({short})\b)", re.M)
    found = []
    for folder in ("mlembed", "tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "personas" not in path.parts and path.name != "test_architecture.py":
                text = path.read_text(encoding="utf-8")
                found += [f"{path.relative_to(ROOT)}: {m.group(0).strip()}" for m in pattern.finditer(text)]
    assert not found, found
