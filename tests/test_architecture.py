"""docs/architecture.md stays true: the tree shows every module and names nothing else, the layer table is the
import contract's, the contracts cover the folders, and every path and name the page quotes exists."""

from __future__ import annotations

import configparser
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
            if not name.startswith("__") and name != "logger":  # each module keeps its own logger
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


# ------------------------------------------------------------------------------------------- the tree and the folders
def tree_paths() -> set[str]:
    """The paths the page's tree draws (two spaces an indent level, folders end in `/`), relative to the repository."""
    block = PAGE.split("## The package", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    paths, stack = set(), []
    for line in block.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name or not re.fullmatch(r"[\w.-]+/?", name):
            continue  # a wrapped description
        depth = (len(line) - len(line.lstrip(" "))) // 2
        if depth > len(stack):
            continue  # a continuation line indented deeper than any entry
        stack = stack[:depth] + ([name.rstrip("/")] if name.endswith("/") else [])
        paths.add("/".join(stack) + "/" if name.endswith("/") else "/".join([*stack, name]))
    return paths


def package_paths() -> set[str]:
    """Every folder and module of mlembed/ (a package's `__init__.py` is its folder) and the two remote-code files."""
    found = {"configuration_mlembed.py", "modeling_mlembed.py", "mlembed/"}
    for path in (ROOT / "mlembed").rglob("*"):
        relative = path.relative_to(ROOT).as_posix()
        if "__pycache__" in path.parts or path.name == "__init__.py":
            continue
        if path.is_dir():
            found.add(relative + "/")
        elif path.suffix == ".py":
            found.add(relative)
    return found


def test_the_tree_shows_every_module_and_nothing_else():
    drawn, real = tree_paths(), package_paths()
    assert sorted(real - drawn) == [], "modules missing from the tree in docs/architecture.md"
    assert sorted(drawn - real) == [], "the tree in docs/architecture.md names paths that do not exist"


# ------------------------------------------------------------------------------------------------- the contracts
CONTRACTS = configparser.ConfigParser()
CONTRACTS.read(ROOT / ".importlinter")


def contract_layers(section: str) -> list[set[str]]:
    """A layers contract's layers, bottom up, each a set of sibling modules."""
    lines = [line.strip() for line in CONTRACTS[section]["layers"].splitlines() if line.strip()]
    return [{name.strip() for name in line.split("|")} for line in reversed(lines)]


def test_there_is_nothing_to_ignore():
    assert not any("ignore_imports" in CONTRACTS[section] for section in CONTRACTS.sections())


def test_the_top_contract_has_every_folder_of_mlembed_once():
    names = [name for layer in contract_layers("importlinter:contract:layers") for name in layer]
    entries = sorted(
        path.stem
        for path in (ROOT / "mlembed").iterdir()
        if (path.suffix == ".py" and path.name != "__init__.py") or (path / "__init__.py").is_file()
    )
    assert sorted(names) == entries


def test_the_layer_table_is_the_top_contract():
    table = PAGE.split("## Layers, bottom up", 1)[1].split("\n\n", 2)[1]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| layer")]
    drawn = [
        {re.sub(r"(\.py|/)$", "", name) for name in re.findall(r"`([\w./]+)`", row.split("|")[2])} for row in rows
    ]
    assert drawn[0] == {"configuration_mlembed", "modeling_mlembed"}  # below the package
    assert drawn[1:] == contract_layers("importlinter:contract:layers")


INNER = [section for section in CONTRACTS.sections() if section.startswith("importlinter:contract:") and
         section != "importlinter:contract:layers"]  # fmt: skip


@pytest.mark.parametrize("section", INNER)
def test_each_inner_contract_names_every_module_of_its_folder(section):
    modules = {name for layer in contract_layers(section) for name in layer}
    packages = {name.rsplit(".", 1)[0] for name in modules}
    assert len(packages) == 1, f"{section} spans {packages}"
    folder = ROOT / packages.pop().replace(".", "/")
    present = {f"{folder.relative_to(ROOT).as_posix().replace('/', '.')}.{p.stem}" for p in folder.glob("*.py")}
    assert modules == present - {f"{m.rsplit('.', 1)[0]}.{n}" for m in modules for n in ("__init__", "__main__")}


def test_every_folder_with_layers_inside_is_on_the_page():
    for section in INNER:
        folder = next(iter(contract_layers(section)[0])).split(".")[1]
        assert f"`{folder}/` (" in PAGE, f"docs/architecture.md does not describe the layers inside {folder}/"


def test_the_old_paths_table_is_moved():
    table = PAGE.split("### Old import paths", 1)[1].split("| old path | now |", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        old, new = line.split("|")[1:3]
        rows[old.strip().strip("`")] = tuple(re.findall(r"`([\w.]+)`", new))
    assert rows == mlembed.MOVED
