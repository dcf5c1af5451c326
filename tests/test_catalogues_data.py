"""The TEST-ONLY catalogue set: .mo reading, message filters, pairing, the .deb reader and the eval-file layout.

The .mo files are written by ``conftest.write_mo``, a writer of the documented GNU layout (header, two offset tables,
NUL-terminated strings; https://www.gnu.org/software/gettext/manual/html_node/MO-Files.html), and read back by the
module through the standard library: the two sides share no code.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import LOCALE, build_deb, write_mo

from mlembed.cli import main as cli
from mlembed.eval.data import load_retrieval_data
from mlembed.mini import catalogues
from mlembed.mini.catalogues import (
    Pair,
    assign_pairs,
    build_catalogue_testset,
    candidate_pairs,
    clean_message,
    parse_catalogue,
    read_deb_catalogues,
    skip_reason,
)

HEADER = "Content-Type: text/plain; charset=UTF-8\nPlural-Forms: nplurals=2; plural=(n != 1);\n"
needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb builds and reads the test .deb")


# Real coreutils / dpkg / tar messages and their German translations (shortened catalogues).
GERMAN = {
    "": HEADER,
    "%s exists but is not a directory": "%s existiert, ist aber kein Verzeichnis",
    "Print the full filename of the current working directory.\n": (
        "Den vollständigen Dateinamen des aktuellen Arbeitsverzeichnisses ausgeben.\n"
    ),
    "file system full, cannot write to the file": "Dateisystem voll, es kann nicht in die Datei geschrieben werden",
    "Do you want to remove the signature?": "Wollen Sie die Signatur entfernen?",
    "write error": "Schreibfehler",
    "  -a, --all   do not ignore entries starting with .": "  -a, --all   mit . beginnende nicht ignorieren",
    "GNU General Public License version 3 or later": "GNU General Public License version 3 or later",
    "%lu block in the file system is used\0%lu blocks in the file system are used": (
        "%lu Block im Dateisystem ist belegt\0%lu Blöcke im Dateisystem sind belegt"
    ),
    "menu\x04Save the current file to disk": "Die aktuelle Datei speichern",
}
FRENCH = {
    "": HEADER,
    "%s exists but is not a directory": "%s existe mais n'est pas un répertoire",
    "file system full, cannot write to the file": "système de fichiers plein, impossible d'écrire dans le fichier",
    "Do you want to remove the signature?": "Voulez-vous supprimer la signature ?",
    "Save the current file to disk": "Enregistrer le fichier courant sur le disque",
}


def test_mo_writer_is_what_gettext_reads():
    """The test writer is valid input for the stdlib reader (else every test below would test nothing)."""
    import gettext
    import io

    catalogue = gettext.GNUTranslations(io.BytesIO(write_mo(GERMAN)))
    assert catalogue.gettext("write error") == "Schreibfehler"
    assert catalogue.ngettext(*GERMAN_PLURAL, 5) == "%lu Blöcke im Dateisystem sind belegt"


GERMAN_PLURAL = ("%lu block in the file system is used", "%lu blocks in the file system are used")


def test_parse_catalogue_singular_plural_context():
    messages = parse_catalogue(write_mo(GERMAN))
    assert "" not in messages  # the header is metadata
    assert messages["write error"] == "Schreibfehler"
    assert messages[GERMAN_PLURAL[0]] == "%lu Block im Dateisystem ist belegt"  # the singular pair only
    assert GERMAN_PLURAL[1] not in messages and not any("\0" in key for key in messages)
    assert messages["Save the current file to disk"] == "Die aktuelle Datei speichern"  # msgctxt removed
    assert len(messages) == len(GERMAN) - 1


def test_parse_catalogue_drops_untranslated_and_rejects_garbage():
    assert parse_catalogue(write_mo({"": HEADER, "not translated yet": "", "kept": "behalten"})) == {
        "kept": "behalten"
    }
    with pytest.raises(ValueError, match="not a readable GNU .mo"):
        parse_catalogue(b'msgid "hello"\nmsgstr "hallo"\n')  # a .po file, not a .mo
    with pytest.raises(ValueError, match="not a readable GNU .mo"):
        parse_catalogue(write_mo(GERMAN)[:40])  # truncated


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("cannot remove directory %s\n", "cannot remove directory"),
        ("cannot open '%s' for reading: %s", "cannot open for reading"),
        ("Verzeichnis »%s« kann nicht angelegt werden:", "Verzeichnis kann nicht angelegt werden"),
        ("nie można otworzyć „%s”", "nie można otworzyć"),
        ("「%s」を開けません", "を開けません"),
        ("%1$s: read %2$lu of %3$lld bytes", "read of bytes"),
        ("size %'zu; %<PRIu64> blocks", "size ; blocks"),
        ("Voulez-vous supprimer la signature ?", "Voulez-vous supprimer la signature ?"),
        ("%(count)d files in {folder} and {}", "files in and"),
        ("100%% done, %-*.*s", "100% done"),
        ("_Save the file as...", "Save the file as..."),
        ("&Open the archive", "Open the archive"),
        ("ファイルを保存(_S)", "ファイルを保存"),
        ("Usage:\n  line two\tand  three\n\n", "Usage: line two and three"),
        ("(%s bytes) converted to sparse holes.", "(bytes) converted to sparse holes."),
        ("snake_case stays", "snake_case stays"),  # no accelerator inside a word
    ],
)
def test_clean_message(raw: str, expected: str):
    assert clean_message(raw) == expected


@pytest.mark.parametrize(
    ("msgid", "translation", "reason"),
    [
        ("%s exists but is not a directory", "%s existiert, ist aber kein Verzeichnis", None),
        ("  -a, --all   do not ignore entries starting with .", "Einträge nicht ignorieren, die beginnen", "options"),
        ("use -n to print nothing at all here", "mit -n gar nichts ausgeben hier", "options"),
        ("see https://www.gnu.org/software/coreutils/ for help", "siehe Hilfe dort oben bitte", "code"),
        ("the value of max_depth must be positive", "der Wert muss positiv sein immer", "code"),
        ("invalid argument for option value=foo given", "ungültiges Argument für die Option", "code"),
        ("%s: %s: %s: %s: cannot stat the file", "kann die Datei nicht lesen, leider", "placeholders"),
        ("write error", "Schreibfehler", "short"),
        (
            "Sector 512 of 4096 at offset 1048576 is bad",
            "Sektor 512 von 4096 bei Offset 1048576 ist defekt",
            "symbols",
        ),
        ("100% sure that the file is gone", "zu 100% sicher, dass die Datei weg ist", None),
        ("file system full, cannot write to the file", "file system full, cannot write to the file", "untranslated"),
        ("Linux /usr verity partition (x86 ARM)", "Linux /usr verity Partition (x86 ARM)", "untranslated"),
        ("file system full, cannot write to the file", "123 456", "empty_translation"),
    ],
)
def test_skip_reason(msgid: str, translation: str, reason: str | None):
    assert skip_reason(msgid, clean_message(msgid), clean_message(translation)) == reason


def test_candidate_pairs_dedup_and_ambiguity():
    german_tar = {
        "": HEADER,
        "File system full, cannot write to the file.": "Platte voll, Schreiben in die Datei unmöglich",
        "Do you really want to remove the signature": "Wollen Sie die Signatur entfernen?",  # same German as dpkg's
    }
    catalogues = {
        "dpkg": {("de", "dpkg"): write_mo(GERMAN), ("fr", "dpkg"): write_mo(FRENCH), ("es", "dpkg"): b"junk"},
        "tar": {("de", "tar"): write_mo(german_tar)},
    }
    candidates, skipped = candidate_pairs(catalogues, ["de", "fr", "es"])
    full = "file system full cannot write to the file"
    # the English message met again in tar (other case and punctuation) is one document; dpkg (sorted first) wins
    assert candidates[full]["de"] == Pair(
        "Dateisystem voll, es kann nicht in die Datei geschrieben werden",
        "file system full, cannot write to the file",
        "de",
        "dpkg",
    )
    assert skipped["de"]["duplicate_english"] == 1
    # one German text for two English messages: two right answers, so neither is kept in German; French stays
    remove = "do you want to remove the signature"
    assert "de" not in candidates[remove] and "do you really want to remove the signature" not in candidates
    assert candidates[remove]["fr"].query == "Voulez-vous supprimer la signature ?"
    assert skipped["de"]["ambiguous_translation"] == 2
    assert skipped["es"] == {"unreadable_catalogue": 1}
    german = {pairs["de"].passage for pairs in candidates.values() if "de" in pairs}
    assert german == {
        "exists but is not a directory",
        "Print the full filename of the current working directory.",
        "file system full, cannot write to the file",
        "block in the file system is used",
        "Save the current file to disk",
    }
    assert skipped["de"]["options"] == 1 and skipped["de"]["untranslated"] == 1 and skipped["de"]["short"] == 1


def synthetic_candidates(size: int, languages: list[str], missing: dict[str, set[int]]) -> dict[str, dict[str, Pair]]:
    return {
        f"message {i:03d}": {
            language: Pair(f"{language} query {i}", f"message {i:03d}", language, "pkg")
            for language in languages
            if i not in missing.get(language, set())
        }
        for i in range(size)
    }


def test_assign_pairs_caps_balance_and_one_language_per_message():
    languages = ["de", "fr", "ja"]
    candidates = synthetic_candidates(40, languages, {"ja": set(range(35))})  # ja translates only 5 messages
    pairs = assign_pairs(candidates, languages, per_language=8, seed=1)
    counts = {language: sum(pair.language == language for pair in pairs) for language in languages}
    assert counts == {"de": 8, "fr": 8, "ja": 5}
    passages = [pair.passage for pair in pairs]
    assert len(set(passages)) == len(passages)  # every English message is the target of one query
    for pair in pairs:
        assert pair == candidates[pair.passage][pair.language]
    assert [pair.language for pair in pairs] == sorted((pair.language for pair in pairs), key=languages.index)


def test_assign_pairs_is_seeded():
    languages = ["de", "fr"]
    candidates = synthetic_candidates(50, languages, {})
    first = assign_pairs(candidates, languages, 5, seed=0)
    assert first == assign_pairs(dict(reversed(list(candidates.items()))), languages, 5, seed=0)  # input order
    assert {p.passage for p in first} != {p.passage for p in assign_pairs(candidates, languages, 5, seed=1)}


@needs_dpkg
def test_read_deb_catalogues_takes_only_message_catalogues(tmp_path: Path):
    german, french = write_mo(GERMAN), write_mo(FRENCH)
    deb = build_deb(
        tmp_path,
        "dpkg",
        {
            LOCALE.format("de", "dpkg"): german,
            LOCALE.format("fr", "dpkg"): french,
            "usr/share/man/de/man1/dpkg.1": b".TH DPKG 1\nManualseite\n",  # reserved: must never be read
            "usr/share/locale/de/LC_MESSAGES/notes.txt": b"not a catalogue",
            "usr/share/doc/dpkg/de.mo": german,  # a .mo outside usr/share/locale/*/LC_MESSAGES
        },
        {LOCALE.format("de", "dpkg-dev"): "dpkg.mo", LOCALE.format("fr", "gone"): "../../xx/LC_MESSAGES/x.mo"},
    )
    assert read_deb_catalogues(deb) == {("de", "dpkg"): german, ("de", "dpkg-dev"): german, ("fr", "dpkg"): french}
    assert read_deb_catalogues(deb, ["fr", "ja"]) == {("fr", "dpkg"): french}
    assert catalogues.package_version(deb) == "1.2-3"


@needs_dpkg
def test_build_writes_a_loadable_deterministic_test_file(tmp_path: Path):
    debs = {
        "dpkg": build_deb(tmp_path, "dpkg", {LOCALE.format("de", "dpkg"): write_mo(GERMAN)}),
        "tar": build_deb(tmp_path, "tar", {LOCALE.format("fr", "tar"): write_mo(FRENCH)}),
    }
    summary = build_catalogue_testset(tmp_path / "a", ["en", "de", "fr"], debs=debs, max_queries_per_language=2)
    frame = pd.read_parquet(tmp_path / "a" / "eval" / "catalogues_test.parquet")
    assert list(frame.columns) == ["query", "passage", "language", "package"]
    assert frame.groupby("language").size().to_dict() == {"de": 2, "fr": 2}
    for row in frame.itertuples():  # each pair is a catalogue entry: its cleaned msgid and cleaned singular msgstr
        catalogue, package = (GERMAN, "dpkg") if row.language == "de" else (FRENCH, "tar")
        entries = {clean_message(k.split("\x04")[-1].split("\0")[0]): v.split("\0")[0] for k, v in catalogue.items()}
        assert clean_message(entries[row.passage]) == row.query and row.package == package
    data = load_retrieval_data(tmp_path / "a" / "eval" / "catalogues_test.parquet")
    assert len(data.queries) == 4 and len(data.corpus) == 4 and all(len(rel) == 1 for rel in data.relevant)
    assert sorted(set(data.languages)) == ["de", "fr"]
    for query, relevant, language in zip(data.queries, data.relevant, data.languages, strict=True):
        row = frame[frame["query"] == query].iloc[0]
        assert data.corpus[next(iter(relevant))] == row["passage"] and language == row["language"]
    assert summary["languages"]["de"]["queries"] == 2 and "en" not in summary["languages"]
    assert summary["languages"]["de"]["candidates"] == 6 and summary["languages"]["fr"]["candidates"] == 4
    assert summary["packages"]["dpkg"]["version"] == "1.2-3" and summary["corpus"] == 4
    assert "TEST ONLY" in summary["use"] and not (tmp_path / "a" / "train").exists()
    build_catalogue_testset(tmp_path / "b", ["de", "fr"], debs=debs, max_queries_per_language=2)
    pd.testing.assert_frame_equal(frame, pd.read_parquet(tmp_path / "b" / "eval" / "catalogues_test.parquet"))


def test_errors_name_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(ValueError, match="besides English"):
        build_catalogue_testset(tmp_path, ["en", "en_GB"], debs={})
    with pytest.raises(ValueError, match="max_corpus=2"):
        build_catalogue_testset(tmp_path, ["de", "fr", "ja"], debs={}, max_corpus=2)
    monkeypatch.setattr(catalogues.shutil, "which", lambda tool: None)
    with pytest.raises(RuntimeError, match="apt-get not found.*Debian"):
        catalogues.fetch_packages(tmp_path / "cache", ["sed"])
    (tmp_path / "foreign" / "lists").mkdir(parents=True)
    (tmp_path / "foreign" / "lists" / "other").touch()
    monkeypatch.setattr(catalogues.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    with pytest.raises(ValueError, match="not created by fetch_packages"):
        catalogues.fetch_packages(tmp_path / "foreign", ["sed"])


def test_cli_subcommand_reports_errors_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_info:
        cli(["data", "catalogues", str(tmp_path / "out"), "--languages", "en"])
    assert exit_info.value.code == 2
    assert (
        "mlembed data catalogues: error: give at least one query language besides English" in capsys.readouterr().err
    )


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="runs apt-get update against a closed local port")
def test_unreachable_mirror_is_an_error(tmp_path: Path):
    with pytest.raises(RuntimeError, match="got no Packages index.*is the mirror reachable"):
        catalogues.fetch_packages(tmp_path / "cache", ["sed"], mirror="http://127.0.0.1:9/debian")


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("MLEMBED_NETWORK_TESTS") != "1" or shutil.which("apt-get") is None,
    reason="downloads from deb.debian.org; set MLEMBED_NETWORK_TESTS=1 on a Debian machine",
)
def test_build_from_debian_mirror(tmp_path: Path):
    summary = build_catalogue_testset(
        tmp_path / "out", ["de", "ja"], ["sed", "grep"], tmp_path / "cache", max_queries_per_language=5
    )
    assert set(summary["packages"]) == {"grep", "sed"}
    assert summary["languages"]["de"]["queries"] == 5 and summary["languages"]["ja"]["queries"] == 5
    data = load_retrieval_data(tmp_path / "out" / "eval" / "catalogues_test.parquet")
    assert len(data.queries) == 10 and len(data.corpus) == 10
    again = catalogues.fetch_packages(tmp_path / "cache", ["grep", "sed"])  # cached: the same files again
    assert {name: path.name for name, path in again.items()} == {
        name: info["file"] for name, info in summary["packages"].items()
    }
