"""Debian Translation-<lang> pairs: parser, held-out split, negatives and the published parquet format."""

from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from mlembed.cli import main as cli
from mlembed.mini import debian
from mlembed.mini.debian import (
    DebianDescription,
    build_debian_pairs,
    clean_long_description,
    fetch_translations,
    find_translation_files,
    heldout_split,
    mine_negatives,
    parse_translation,
    read_translation_file,
    select_pairs,
    split_key,
)

FIXTURES = Path(__file__).parent / "fixtures"
PL = FIXTURES / "Translation-pl-sample"
EN = FIXTURES / "Translation-en-sample"
APT_NAME = "deb.debian.org_debian_dists_trixie_main_i18n_Translation-{}"


def naive_stanza(text: str, package: str) -> tuple[str, list[list[str]]]:
    """Independent reading: the summary after the colon, then raw continuation lines grouped at ' .' lines."""
    block = text.split(f"Package: {package}\n", 1)[1].split("\n\n", 1)[0].split("\n")
    summary = block[1].split(":", 1)[1].strip()
    paragraphs: list[list[str]] = [[]]
    for line in block[2:]:
        if line == " .":
            paragraphs.append([])
        else:
            paragraphs[-1].append(line.strip())
    return summary, paragraphs


@pytest.fixture
def lists_dir(tmp_path: Path) -> Path:
    """The two fixtures laid out as apt names them in a lists folder."""
    folder = tmp_path / "lists"
    folder.mkdir()
    shutil.copy(PL, folder / APT_NAME.format("pl"))
    shutil.copy(EN, folder / APT_NAME.format("en"))
    return folder


def test_parser_reads_every_stanza():
    text = PL.read_text(encoding="utf-8")
    records = parse_translation(text)
    assert [r.package for r in records] == re.findall(r"^Package: (\S+)$", text, re.MULTILINE)
    assert len(records) == 11
    for record in records:
        assert record.language == "pl"
        assert re.fullmatch(r"[0-9a-f]{32}", record.md5)
        assert record.short and record.long and record.long == record.long.strip()
        assert "\n." not in record.long and not record.long.startswith(".")


@pytest.mark.parametrize("package", ["cpio", "bash", "dash", "grep", "rsync"])
def test_parser_matches_naive_reading(package: str):
    """Packages without list items: wrapped lines joined by spaces, one line per paragraph."""
    text = PL.read_text(encoding="utf-8")
    summary, paragraphs = naive_stanza(text, package)
    record = next(r for r in parse_translation(text) if r.package == package)
    assert record.short == summary
    assert record.long == "\n".join(" ".join(lines) for lines in paragraphs)


def test_parser_known_package():
    record = next(r for r in parse_translation(PL.read_text(encoding="utf-8")) if r.package == "cpio")
    assert record.short == "GNU cpio -- program do zarządzania archiwami plików"
    assert record.long.startswith("GNU cpio jest narzędziem do tworzenia i rozpakowania archiwów lub kopiowania")
    assert record.long.endswith("czytanie i zapisywanie plików tar.")
    assert record.md5 == "5f492bf139a41f29fd2d6fcadf43606e"


def test_list_items_get_their_own_lines():
    apt = next(r for r in parse_translation(PL.read_text(encoding="utf-8")) if r.package == "apt")
    lines = apt.long.split("\n")
    items = [line for line in lines if line.startswith("* ")]
    assert len(items) == PL.read_text(encoding="utf-8").split("Package: apt\n")[1].split("\n\n")[0].count("  * ")
    assert (
        "* apt-get do odszukiwania pakietów i informacji na ich temat z uwierzytelnionych źródeł oraz do "
        "instalowania, aktualizowania i usuwania pakietów razem z ich zależnościami;"
    ) in lines


def test_clean_long_description_joins_by_script():
    assert clean_long_description([" one", " two", " .", " three"]) == "one two\nthree"
    assert clean_long_description([" フレー", " ムワーク"]) == "フレームワーク"
    assert clean_long_description([" 사용 가능한", " 패키지"]) == "사용 가능한 패키지"


def test_english_fixture_and_compressed_copies(tmp_path: Path):
    plain = read_translation_file(EN)
    (tmp_path / "t.gz").write_bytes(gzip.compress(plain.encode()))
    (tmp_path / "t.xz").write_bytes(lzma.compress(plain.encode()))
    assert read_translation_file(tmp_path / "t.gz") == plain == read_translation_file(tmp_path / "t.xz")
    records = parse_translation(plain)
    assert {r.language for r in records} == {"en"}
    assert [r.package for r in records] == [r.package for r in parse_translation(PL.read_text(encoding="utf-8"))]


def test_find_translation_files_handles_apt_names(tmp_path: Path):
    for name in ["Translation-zh%5fCN", "Translation-pt_BR", "Translation-pt.gz", "Translation-pl.diff"]:
        (tmp_path / f"deb.debian.org_debian_dists_trixie_main_i18n_{name}").touch()
    found = find_translation_files(tmp_path, ["zh_CN", "pt", "pl"], "trixie")
    assert found["zh_CN"].name.endswith("Translation-zh%5fCN")
    assert found["pt"].name.endswith("Translation-pt.gz")
    assert "pl" not in found


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty Translation file"),
        ("   \n\n", "empty Translation file"),
        ("hello\nworld\n", "no stanza"),
        ("Package: x\nVersion: 1\n\nPackage: y\n", "no stanza"),
    ],
)
def test_parser_rejects_bad_input(text: str, message: str):
    with pytest.raises(ValueError, match=message):
        parse_translation(text)


def test_empty_file_on_disk_raises(tmp_path: Path):
    (tmp_path / "Translation-pl").write_text("")
    with pytest.raises(ValueError, match="empty Translation file"):
        parse_translation(read_translation_file(tmp_path / "Translation-pl"))


def record(package: str, short: str, long: str, language: str = "pl") -> DebianDescription:
    return DebianDescription(package, "0" * 32, language, short, long)


def test_select_pairs_skips_and_counts():
    english = {"old": record("old", "transitional package", "x" * 50, "en")}
    rows = [
        record("a", "A tool", "A long enough description of the tool."),
        record("a", "A tool v2", "Another long enough description of it."),
        record("b", "B tool", "short"),
        record("c", "C tool", ""),
        record("d", "D tool", "A long enough description of the tool."),
        record("e", "A tool", "Yet another long enough description here."),
        record("old", "Stary", "Pakiet przejściowy, który można bezpiecznie usunąć."),
    ]
    kept, skipped = select_pairs(rows, english, min_passage_chars=20)
    assert [r.package for r in kept] == ["a"]
    assert skipped == {
        "duplicate_package": 1,
        "too_short": 1,
        "no_passage": 1,
        "duplicate_passage": 1,
        "duplicate_query": 1,
        "transitional": 1,
    }


def test_heldout_split_is_deterministic_and_disjoint():
    names = [f"package-{i}" for i in range(2000)]
    first = {name: heldout_split(f"pkg:{name}", 0.2) for name in names}
    assert first == {name: heldout_split(f"pkg:{name}", 0.2) for name in names}
    test = {name for name, split in first.items() if split == "test"}
    assert 0.15 < len(test) / len(names) < 0.25


def test_split_key_groups_sibling_packages():
    english = {
        "libfoo1": record("libfoo1", "Foo library", "Foo does bar.\nShared library.", "en"),
        "libfoo-dev": record("libfoo-dev", "Foo headers", "Foo  does BAR.\nHeaders.", "en"),
    }
    assert split_key(record("libfoo1", "q", "p"), english) == split_key(record("libfoo-dev", "q", "p"), english)
    assert split_key(record("other", "q", "p"), english) == "pkg:other"


def test_mine_negatives_prefers_shared_words_and_excludes_positive():
    pool = [record(f"p{i}", f"filler words number{i}", f"passage {i} " * 5) for i in range(40)]
    pool.append(record("zz", "compression utility xz", "Compresses with xz. " * 3))
    pool.append(record("yy", "gzip compression utility", "Compresses with gzip. " * 3))
    query = pool[-1]
    mined = mine_negatives([query], pool, negatives=7, seed=0)[0]
    assert len(mined) == len(set(mined)) == 7
    assert query.long not in mined
    assert "Compresses with xz. " * 3 in mined  # the one package sharing rare summary words


def test_mine_negatives_pool_too_small():
    pool = [record(f"p{i}", f"tool {i}", f"passage number {i}") for i in range(3)]
    with pytest.raises(ValueError, match="too small"):
        mine_negatives(pool[:1], pool, negatives=7)


def test_build_writes_published_format(lists_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    summary = build_debian_pairs(out, ["pl", "en"], negatives=2, lists_dir=lists_dir, fetch=False, test_fraction=0.5)
    for language in ["pl", "en"]:
        for split in ["train", "test"]:
            frame = pd.read_parquet(out / split / f"debian_{language}_retrieval.parquet")
            assert list(frame.columns) == ["query", "passage", "negative_1", "negative_2"]
            assert len(frame) == summary["languages"][language][split] > 0
            for row in frame.itertuples(index=False):
                assert all(isinstance(value, str) and value for value in row)
                assert row.negative_1 != row.passage and row.negative_2 != row.passage
                assert row.negative_1 != row.negative_2
    evaluation = {split: pd.read_parquet(out / "eval" / f"debian_{split}.parquet") for split in ["train", "test"]}
    assert list(evaluation["test"].columns) == ["query", "passage", "language", "package"]
    assert set(evaluation["train"].package).isdisjoint(evaluation["test"].package)
    for frame in evaluation.values():  # the same package is in the same split in every language
        assert set(frame[frame.language == "pl"].package) == set(frame[frame.language == "en"].package)
    assert (out / "summary.json").exists()


def test_build_caps_rows_with_fixed_seed(lists_dir: Path, tmp_path: Path):
    kwargs = dict(
        max_train_per_lang=3, max_test_per_lang=2, negatives=2, lists_dir=lists_dir, fetch=False, test_fraction=0.5
    )
    build_debian_pairs(tmp_path / "a", ["pl"], seed=1, **kwargs)
    build_debian_pairs(tmp_path / "b", ["pl"], seed=1, **kwargs)
    first = pd.read_parquet(tmp_path / "a" / "train" / "debian_pl_retrieval.parquet")
    assert len(first) == 3
    pd.testing.assert_frame_equal(first, pd.read_parquet(tmp_path / "b" / "train" / "debian_pl_retrieval.parquet"))


def test_build_without_files_and_no_fetch(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="pass fetch=True"):
        build_debian_pairs(tmp_path / "out", ["pl"], lists_dir=tmp_path, fetch=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(languages=[]), "languages must not be empty"),
        (dict(negatives=0), "negatives must be >= 1"),
        (dict(max_train_per_lang=-1), "row caps must be >= 0"),
        (dict(test_fraction=1.0), r"test_fraction must be in \(0, 1\)"),
    ],
)
def test_build_rejects_bad_options(tmp_path: Path, kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        build_debian_pairs(tmp_path, lists_dir=tmp_path, fetch=False, **kwargs)


def test_fetch_refuses_foreign_folder(lists_dir: Path):
    with pytest.raises(ValueError, match="not created by fetch_translations"):
        fetch_translations(lists_dir, ["pl"])


def test_fetch_without_apt_get(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(debian.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get not found.*Command: apt-get update"):
        fetch_translations(tmp_path / "lists", ["pl"])


def test_fetch_reports_apt_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(debian.shutil, "which", lambda name: "/usr/bin/apt-get")
    failed = subprocess.CompletedProcess([], 100, "", "E: Could not resolve deb.debian.org")
    monkeypatch.setattr(debian.subprocess, "run", lambda *args, **kwargs: failed)
    with pytest.raises(RuntimeError, match=r"(?s)apt-get update failed \(exit 100\).*Could not resolve.*Command:"):
        fetch_translations(tmp_path / "lists", ["pl"])


def fake_apt_update(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """What `apt-get update` does to its lists folder: unlink every top-level file it does not know (sub-folders
    stay; seen with apt 3.0), then write the index it fetched."""
    lists = Path(next(arg for arg in command if arg.startswith("-oDir::State::Lists=")).split("=", 1)[1])
    for path in lists.iterdir():
        if path.is_file() and "_dists_" not in path.name:
            path.unlink()
    (lists / "deb.debian.org_debian_dists_trixie_main_i18n_Translation-pl").write_text(
        (FIXTURES / "Translation-pl-sample").read_text(encoding="utf-8"), encoding="utf-8"
    )
    return subprocess.CompletedProcess(command, 0, "", "")


def test_fetch_twice_into_its_own_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(debian.shutil, "which", lambda name: "/usr/bin/apt-get")
    monkeypatch.setattr(debian.subprocess, "run", fake_apt_update)
    first = fetch_translations(tmp_path / "lists", ["pl"])
    assert set(first) == {"pl"} and not (tmp_path / "lists" / "sources.list").exists()  # apt's clean-up ran
    assert fetch_translations(tmp_path / "lists", ["pl"]) == first  # the folder is still recognised as ours


def test_main_runs_offline(lists_dir: Path, tmp_path: Path):
    argv = [
        str(tmp_path / "out"),
        "--languages",
        "pl",
        "--negatives",
        "2",
        "--test-fraction",
        "0.5",
        "--lists-dir",
        str(lists_dir),
        "--no-fetch",
    ]
    assert cli(["data", "debian", *argv]) == 0
    assert (tmp_path / "out" / "train" / "debian_pl_retrieval.parquet").exists()


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("MLEMBED_NETWORK_TESTS") != "1" or shutil.which("apt-get") is None,
    reason="downloads from deb.debian.org; set MLEMBED_NETWORK_TESTS=1 on a Debian machine",
)
def test_fetch_from_debian_mirror(tmp_path: Path):
    files = fetch_translations(tmp_path / "lists", ["vi"])
    assert fetch_translations(tmp_path / "lists", ["vi"]) == files  # a second update into the same folder
    records = parse_translation(read_translation_file(files["vi"]))
    assert records and {r.language for r in records} == {"vi"}
