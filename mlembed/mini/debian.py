"""Multilingual retrieval pairs from Debian's translated package descriptions.

Why: Debian ships every package description in English plus community translations (the Debian
Description Translation Project, DDTP) as plain-text ``Translation-<lang>`` indexes on every mirror.
Each stanza pairs a one-line summary with a paragraph-long description of the same package, in the
same language: a natural (query = summary, passage = description) retrieval pair, available for
Polish, Vietnamese, German, Japanese, ... without any model or data-set download.

Source: ``http://deb.debian.org/debian/dists/<suite>/main/i18n/Translation-<lang>``, fetched with
``apt-get update`` into a private lists folder (no root needed, the system's apt state is untouched).
The texts are package descriptions written by Debian maintainers and translated by DDTP volunteers;
they are distributed with Debian under the licences of the respective packages / Debian's DFSG terms.

Output (the published ML-Embed parquet format):
    ``<out>/train/debian_<lang>_retrieval.parquet`` and ``<out>/test/debian_<lang>_retrieval.parquet``
    with columns ``query``, ``passage``, ``negative_1..negative_N`` (the word ``retrieval`` in the
    name makes the trainer treat it as a retrieval set), ``<out>/eval/debian_<split>.parquet`` with
    ``query``, ``passage``, ``language``, ``package`` for the evaluation sweep, and ``summary.json``.

The split is held out by package: a package's split depends only on a hash of its English first
paragraph (or of its name when there is no English text), so a package, and its sibling packages
that share that paragraph (``libfoo1`` / ``libfoo-dev``), land in the same split in every language.

Run: ``mlembed data debian data/debian --languages en,pl,vi,de,fr``.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import logging
import lzma
import random
import re
import shlex
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tqdm.auto import tqdm

from mlembed.data.mining import Example
from mlembed.data.mining import mine_negatives as mine_lexical

logger = logging.getLogger(__name__)

DEFAULT_LANGUAGES = ("en", "pl", "vi", "de", "fr", "es", "it", "pt", "ru", "ja", "zh_CN", "uk", "cs", "ko")
DEFAULT_SUITE = "trixie"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEFAULT_LISTS_DIR = Path("~/.cache/mlembed/debian-i18n").expanduser()
SPLITS = ("train", "test")
MINE_DEPTH = 24  # hard negatives are sampled from the top 24 lexical matches, as in the paper's recipe
# fetch only writes into folders it created (apt-get update deletes foreign lists). The marker lives in the
# `sources.list.d` folder we make inside the lists folder: apt-get update unlinks every file it does not know at the
# top of its lists folder (a marker there was gone after the first fetch) but leaves sub-folders alone.
_MARKER = Path("sources.list.d") / ".mlembed-debian"
_OPENERS = {"": open, ".gz": gzip.open, ".xz": lzma.open, ".lzma": lzma.open, ".bz2": bz2.open}
_BULLET = re.compile(r"^([-*+•o]|\d+[.)])\s")
_NO_SPACE = re.compile(r"[\u3000-\u30ff\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]")  # scripts written without spaces
_DENSE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]")  # a char carries about a word
_TRANSITIONAL = re.compile(r"\b(transitional|dummy)\b", re.IGNORECASE)


@dataclass(frozen=True)
class DebianDescription:
    """One stanza of a Translation file: the package, its summary line and its cleaned long text."""

    package: str
    md5: str
    language: str
    short: str
    long: str


# ----------------------------------------------------------------------------------------------- fetch


def _apt_command(lists_dir: Path, languages: Sequence[str], suite: str, mirror: str, keyring: str) -> list[str]:
    sources = lists_dir / "sources.list"
    sources.write_text(f"deb [signed-by={keyring}] {mirror} {suite} main\n")
    (lists_dir / "sources.list.d").mkdir(exist_ok=True)
    options = {
        "Dir::Etc::SourceList": str(sources),
        "Dir::Etc::SourceParts": str(lists_dir / "sources.list.d"),
        "Dir::State::Lists": str(lists_dir),
        "Dir::Cache::pkgcache": "",
        "Dir::Cache::srcpkgcache": "",
        "Acquire::GzipIndexes": "false",  # plain files: no lz4/zstd reader needed
        "Acquire::Languages": ",".join(languages),
        "Acquire::IndexTargets::deb::Packages::DefaultEnabled": "false",
        "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled": "false",
        "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled": "false",
    }
    return ["apt-get", "update", *[f"-o{key}={value}" for key, value in options.items()]]


def fetch_translations(
    lists_dir: str | Path = DEFAULT_LISTS_DIR,
    languages: Sequence[str] = DEFAULT_LANGUAGES,
    suite: str = DEFAULT_SUITE,
    mirror: str = DEFAULT_MIRROR,
    keyring: str = DEFAULT_KEYRING,
) -> dict[str, Path]:
    """Download ``Translation-<lang>`` indexes with ``apt-get update`` into a private folder.

    Only the i18n indexes of one suite are fetched (no ``Packages``), uncompressed, so the standard
    library can read them. Root is not needed. Returns the files found afterwards, by language.

    Raises:
        ValueError: ``lists_dir`` holds files this function did not create (apt would delete them).
        RuntimeError: ``apt-get`` is missing or fails; the message carries the command to run by hand.
    """
    lists_dir = Path(lists_dir)
    if lists_dir.exists() and any(lists_dir.iterdir()) and not (lists_dir / _MARKER).exists():
        raise ValueError(
            f"{lists_dir} is not empty and was not created by fetch_translations; apt-get update "
            "would delete its other index files. Pass an empty or dedicated folder."
        )
    (lists_dir / "partial").mkdir(parents=True, exist_ok=True)
    (lists_dir / _MARKER).parent.mkdir(exist_ok=True)
    (lists_dir / _MARKER).touch()
    command = _apt_command(lists_dir, languages, suite, mirror, keyring)
    shown = shlex.join(command)
    if shutil.which("apt-get") is None:
        raise RuntimeError(
            f"apt-get not found: run this on Debian/Ubuntu or copy Translation files from a "
            f"Debian mirror into {lists_dir}. Command: {shown}"
        )
    logger.info("Fetching Debian %s translations for %s", suite, ", ".join(languages))
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"apt-get update failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}\nCommand: {shown}"
        )
    return find_translation_files(lists_dir, languages, suite)


def find_translation_files(
    lists_dir: str | Path, languages: Sequence[str], suite: str = DEFAULT_SUITE
) -> dict[str, Path]:
    """Map each language to its ``*_dists_<suite>_main_i18n_Translation-<lang>[.gz|.xz|...]`` file, if present."""
    found = {}
    for language in languages:
        for code in dict.fromkeys([language, language.replace("_", "%5f")]):  # apt escapes "_" in file names
            stem = f"_dists_{suite}_main_i18n_Translation-{code}"
            matches = sorted(
                path
                for path in Path(lists_dir).glob(f"*{stem}*")
                if path.name.split(stem, 1)[1] in (*_OPENERS, ".lz4", ".zst")
            )
            if matches:
                found[language] = matches[0]
                break
    return found


def available_languages(lists_dir: str | Path, suite: str = DEFAULT_SUITE) -> list[str]:
    """Languages the mirror offers for ``suite``, read from the fetched ``InRelease`` file."""
    languages: set[str] = set()
    for release in Path(lists_dir).glob(f"*_dists_{suite}_InRelease"):
        languages.update(re.findall(r"main/i18n/Translation-([A-Za-z_]+)$", release.read_text(), re.MULTILINE))
    return sorted(languages)


# ----------------------------------------------------------------------------------------------- parse


def read_translation_file(path: str | Path) -> str:
    """Read a Translation index, plain or compressed as apt stores it (gz, xz, bz2; lz4/zst if installed)."""
    path = Path(path)
    suffix = path.suffix if path.suffix in (*_OPENERS, ".lz4", ".zst") else ""
    if suffix == ".lz4":
        try:
            import lz4.frame
        except ImportError as error:
            raise ValueError(f"{path} is lz4-compressed: `pip install lz4`, or `lz4 -d` it first") from error
        return lz4.frame.decompress(path.read_bytes()).decode("utf-8")
    if suffix == ".zst":
        try:
            import zstandard
        except ImportError as error:
            raise ValueError(f"{path} is zstd-compressed: `pip install zstandard`, or `zstd -d` it first") from error
        return zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes()).decode("utf-8")
    with _OPENERS[suffix](path, "rt", encoding="utf-8") as handle:
        return handle.read()


def clean_long_description(lines: Sequence[str]) -> str:
    """Turn deb822 continuation lines into plain text.

    Word-wrapped lines are joined with spaces (none between two Chinese / Japanese characters), `` .``
    paragraph markers become newlines, and list items (``*``, ``-``, ``1.``...) start their own line, so
    the passage reads as the package manager shows it.
    """
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        text = line.strip()
        if text == ".":
            paragraphs.append([])
        elif text:
            current = paragraphs[-1]
            if current and not _BULLET.match(text):
                glue = "" if _NO_SPACE.match(current[-1][-1]) and _NO_SPACE.match(text[0]) else " "
                current[-1] = f"{current[-1]}{glue}{text}"
            else:
                current.append(text)
    return "\n".join("\n".join(paragraph) for paragraph in paragraphs if paragraph).strip()


def _parse_stanza(stanza: str) -> DebianDescription | None:
    fields: dict[str, str] = {}
    long_lines: list[str] = []
    language = None
    in_description = False
    for line in stanza.splitlines():
        if line.startswith((" ", "\t")):
            if in_description:
                long_lines.append(line)
            continue
        key, _, value = line.partition(":")
        in_description = key.startswith("Description-") and key != "Description-md5"
        if in_description:
            language, fields["short"] = key[len("Description-") :], value.strip()
        else:
            fields[key] = value.strip()
    if "Package" not in fields or language is None:
        return None
    return DebianDescription(
        fields["Package"],
        fields.get("Description-md5", ""),
        language,
        fields["short"],
        clean_long_description(long_lines),
    )


def parse_translation(text: str) -> list[DebianDescription]:
    """Parse the deb822 stanzas of a Translation file (``Package``, ``Description-md5``, ``Description-<lang>``).

    Raises:
        ValueError: the text is empty or holds no stanza with a ``Package`` and a ``Description-<lang>`` field.
    """
    if not text.strip():
        raise ValueError("empty Translation file: expected deb822 stanzas with Package and Description-<lang>")
    records = [record for stanza in re.split(r"\n[ \t]*\n", text) if (record := _parse_stanza(stanza))]
    if not records:
        raise ValueError(
            "no stanza with both 'Package:' and 'Description-<lang>:' fields found; "
            "is this a Debian Translation-<lang> file?"
        )
    return records


# ----------------------------------------------------------------------------------------------- pairs


@cache
def first_paragraph(text: str) -> str:
    """The first line of a cleaned description, normalised; siblings of one source package share it."""
    return " ".join(text.split("\n", 1)[0].lower().split())


def split_key(record: DebianDescription, english: dict[str, DebianDescription] | None = None) -> str:
    """What decides a package's split: its English first paragraph (language-independent), else its name."""
    source = (english or {}).get(record.package)
    return f"para:{first_paragraph(source.long)}" if source is not None and source.long else f"pkg:{record.package}"


def heldout_split(key: str, test_fraction: float = 0.15) -> str:
    """Deterministic ``"train"`` / ``"test"`` from a SHA-1 of ``key``: stable across runs, seeds and languages."""
    bucket = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16) / 2**32
    return "test" if bucket < test_fraction else "train"


def select_pairs(
    records: Sequence[DebianDescription],
    english: dict[str, DebianDescription] | None = None,
    min_passage_chars: int = 40,
) -> tuple[list[DebianDescription], Counter]:
    """Keep usable (summary, description) pairs and count what was skipped, by reason.

    Skipped: no summary or description, descriptions shorter than ``min_passage_chars`` (CJK and Hangul
    characters count three times, as one carries about a short word), transitional or dummy packages (by
    their English summary), repeated packages (older description versions), and repeated passages or
    queries (they would make the retrieval target ambiguous).
    """
    kept: list[DebianDescription] = []
    skipped: Counter = Counter()
    seen: dict[str, set[str]] = {"package": set(), "passage": set(), "query": set()}
    for record in records:
        source = (english or {}).get(record.package, record)
        reason = None
        if not record.short:
            reason = "no_query"
        elif not record.long:
            reason = "no_passage"
        elif len(record.long) + 2 * len(_DENSE.findall(record.long)) < min_passage_chars:
            reason = "too_short"
        elif _TRANSITIONAL.search(source.short):
            reason = "transitional"
        else:
            for kind, value in (("package", record.package), ("passage", record.long), ("query", record.short)):
                if value in seen[kind]:
                    reason = f"duplicate_{kind}"
                    break
        if reason:
            skipped[reason] += 1
            continue
        for kind, value in (("package", record.package), ("passage", record.long), ("query", record.short)):
            seen[kind].add(value)
        kept.append(record)
    return kept, skipped


def as_example(record: DebianDescription) -> Example:
    """The (summary, description) pair for mining; its package and first paragraph mark sibling packages."""
    groups = frozenset({f"pkg:{record.package}", f"para:{first_paragraph(record.long)}"})
    return Example(record.short, record.long, groups)


def mine_negatives(
    rows: Sequence[DebianDescription], pool: Sequence[DebianDescription], negatives: int = 7, seed: int | str = 0
) -> list[list[str]]:
    """Hard negatives per row (`mlembed.data.mining.mine_negatives`): passages of pool packages whose summary
    shares rare words with the query; same package, same passage or same first paragraph (siblings) excluded."""
    return mine_lexical([as_example(r) for r in rows], [as_example(r) for r in pool], negatives, seed, MINE_DEPTH)


# ----------------------------------------------------------------------------------------------- build


def write_retrieval_parquet(
    path: str | Path, rows: Sequence[DebianDescription], negatives: Sequence[Sequence[str]]
) -> Path:
    """Write rows in the published training format: ``query``, ``passage``, ``negative_1..negative_N``."""
    import pandas as pd

    table = {"query": [row.short for row in rows], "passage": [row.long for row in rows]}
    for k in range(len(negatives[0]) if negatives else 0):
        table[f"negative_{k + 1}"] = [row_negatives[k] for row_negatives in negatives]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(table).to_parquet(path, index=False)
    return path


def _locate_files(languages: Sequence[str], lists_dir: Path, suite: str, mirror: str, fetch: bool) -> dict[str, Path]:
    wanted = list(dict.fromkeys([*languages, "en"]))  # English decides the split and the transitional filter
    files = find_translation_files(lists_dir, wanted, suite)
    missing = [language for language in languages if language not in files]
    if missing and not fetch:
        raise FileNotFoundError(
            f"no Translation file for {missing} (suite {suite}) in {lists_dir}; "
            "pass fetch=True or run fetch_translations() first"
        )
    if missing:  # a missing English file alone is not worth a fetch: the split then falls back to package names
        files = fetch_translations(lists_dir, wanted, suite, mirror)
    missing = [language for language in languages if language not in files]
    if missing:
        raise ValueError(
            f"Debian {suite} has no Translation file for {missing}; available languages: "
            f"{available_languages(lists_dir, suite)}"
        )
    return files


def _build_language(
    language: str, path: Path, english: dict[str, DebianDescription] | None, options: dict
) -> tuple[dict[str, list[DebianDescription]], dict[str, list[list[str]]], dict]:
    """Rows and negatives per split for one language, plus its counts for the summary."""
    records, skipped = select_pairs(
        parse_translation(read_translation_file(path)), english, options["min_passage_chars"]
    )
    pools: dict[str, list[DebianDescription]] = {split: [] for split in SPLITS}
    for record in records:
        pools[heldout_split(split_key(record, english), options["test_fraction"])].append(record)
    caps = {"train": options["max_train_per_lang"], "test": options["max_test_per_lang"]}
    rows, negatives = {}, {}
    for split in SPLITS:
        rng = random.Random(f"{options['seed']}-{language}-{split}")
        rows[split] = rng.sample(pools[split], min(caps[split], len(pools[split])))
        # test negatives may come from training passages (never the reverse), so small test splits still fill up
        pool = pools["train"] if split == "train" else pools["test"] + pools["train"]
        if rows[split] and len(pool) <= options["negatives"]:
            logger.warning(
                "%s/%s: pool of %d passages is too small for %d negatives; skipped",
                language,
                split,
                len(pool),
                options["negatives"],
            )
            rows[split] = []
        negatives[split] = mine_negatives(rows[split], pool, options["negatives"], rng.random())
    counts = {
        "train": len(rows["train"]),
        "test": len(rows["test"]),
        "parsed": len(records) + sum(skipped.values()),
        "candidates": {split: len(pools[split]) for split in SPLITS},
        "skipped": dict(sorted(skipped.items())),
    }
    logger.info(
        "%s: %d train / %d test pairs (candidates %s, skipped %s)",
        language,
        counts["train"],
        counts["test"],
        counts["candidates"],
        counts["skipped"],
    )
    return rows, negatives, counts


def _check_options(
    languages: Sequence[str], max_train: int, max_test: int, negatives: int, test_fraction: float
) -> None:
    if not languages:
        raise ValueError(f"languages must not be empty; e.g. {list(DEFAULT_LANGUAGES)}")
    if negatives < 1:
        raise ValueError(f"negatives must be >= 1 (retrieval uses 7), got {negatives}")
    if max_train < 0 or max_test < 0:
        raise ValueError(f"row caps must be >= 0, got max_train_per_lang={max_train}, max_test_per_lang={max_test}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")


def build_debian_pairs(
    out_dir: str | Path,
    languages: Sequence[str] = DEFAULT_LANGUAGES,
    max_train_per_lang: int = 2000,
    max_test_per_lang: int = 300,
    negatives: int = 7,
    seed: int = 0,
    lists_dir: str | Path | None = None,
    *,
    suite: str = DEFAULT_SUITE,
    mirror: str = DEFAULT_MIRROR,
    fetch: bool = True,
    test_fraction: float = 0.15,
    min_passage_chars: int = 40,
) -> dict:
    """Build per-language retrieval parquets and held-out eval files from Debian Translation indexes.

    Missing Translation files are fetched into ``lists_dir`` (default ``~/.cache/mlembed/debian-i18n``)
    unless ``fetch=False``. Rows are capped per language and split with a fixed seed. Returns (and writes
    to ``summary.json``) the counts per language and the files written.
    """
    _check_options(languages, max_train_per_lang, max_test_per_lang, negatives, test_fraction)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    lists_dir = Path(lists_dir) if lists_dir is not None else DEFAULT_LISTS_DIR
    files = _locate_files(languages, lists_dir, suite, mirror, fetch)
    english = None
    if "en" in files:
        english = {
            record.package: record for record in reversed(parse_translation(read_translation_file(files["en"])))
        }  # reversed: the first stanza of a package wins, as in select_pairs
    else:
        logger.warning("no English Translation file: splitting by package name, no transitional filter")
    options = dict(
        max_train_per_lang=max_train_per_lang,
        max_test_per_lang=max_test_per_lang,
        negatives=negatives,
        seed=seed,
        test_fraction=test_fraction,
        min_passage_chars=min_passage_chars,
    )
    summary: dict = {
        "source": f"{mirror} {suite} main/i18n",
        "seed": seed,
        "negatives": negatives,
        "languages": {},
        "files": [],
    }
    eval_rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for language in tqdm(languages, desc="Debian languages"):
        rows, mined, summary["languages"][language] = _build_language(language, files[language], english, options)
        for split in SPLITS:
            if not rows[split]:
                continue
            path = write_retrieval_parquet(
                out_dir / split / f"debian_{language}_retrieval.parquet", rows[split], mined[split]
            )
            summary["files"].append(str(path))
            eval_rows[split] += [
                {"query": row.short, "passage": row.long, "language": language, "package": row.package}
                for row in rows[split]
            ]
    summary["files"] += _write_eval(out_dir, eval_rows)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def _write_eval(out_dir: Path, eval_rows: dict[str, list[dict]]) -> list[str]:
    import pandas as pd

    written = []
    for split, rows in eval_rows.items():
        path = out_dir / "eval" / f"debian_{split}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows, columns=["query", "passage", "language", "package"]).to_parquet(path, index=False)
        written.append(str(path))
    return written
