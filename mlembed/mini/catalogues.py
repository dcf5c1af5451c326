"""TEST-ONLY out-of-domain set: cross-lingual retrieval over the gettext catalogues that Debian packages ship.

Why: the mini model is trained (and first evaluated) on Debian package descriptions. A second held-out set of a
different kind of text shows whether what it learned carries over. Program messages ("cannot remove directory",
"No space left on device") are short, terse system strings, translated by the GNU / Debian translation teams into
dozens of languages: a translated message is the query, its English original (the catalogue's ``msgid``) the one
relevant document. The model must find the right English message from a German, Japanese, ... query (cross-lingual
retrieval); the reverse direction is not built, since a corpus of translations in several languages would let an
English query match loan words and untranslated fragments instead.

Design: messages are kept when sentence-like (``skip_reason``: at least 5 words, no command-line options, code or
more than 2 format specifiers) and cleaned of specifiers and accelerators (``clean_message``); an English message
is one document however many packages ship it. Each English message is the target of at most one query, spread
evenly over the languages (``assign_pairs``), because the eval layout has no distractor-only rows: the corpus is
the English side of all pairs, the same for every language. Default caps: 200 queries per language, corpus at most
2000 (9 languages: 1800 queries, 1800 documents), enough for per-language nDCG@10 within a few points and a sweep
that runs in minutes on a CPU. Everything is seeded and read in sorted order: the same packages give the same file.

NEVER TRAIN ON THIS SET: it exists to measure generalisation, and nothing here writes a training file (only
``<out>/eval/catalogues_test.parquet``). Translated manual pages are reserved for an independent check and are never
read: only ``usr/share/locale/<lang>/LC_MESSAGES/*.mo`` members are taken out of the packages.

Sources:
- the binary packages in ``DEFAULT_PACKAGES`` of Debian's ``main`` archive (https://www.debian.org/distrib/packages),
  fetched with ``apt-get download`` through a private apt state (no root, the system's apt state is untouched);
  their catalogues are translations by the GNU Translation Project (https://translationproject.org/) and Debian's
  l10n teams (https://www.debian.org/international/l10n/), under the licences of the respective packages;
- the ``.mo`` format is GNU gettext's (https://www.gnu.org/software/gettext/manual/html_node/MO-Files.html), read
  with the standard library's ``gettext.GNUTranslations``.

Output (the layout of ``mlembed.mini.debian``'s eval files, readable by ``mlembed.eval.data.load_retrieval_data``):
``<out>/eval/catalogues_test.parquet`` with ``query``, ``passage``, ``language``, ``package``, and
``<out>/summary.json`` (counts per language and skip reason, packages with versions, caps, seed).

Run: ``mlembed data catalogues data/catalogues --languages pl,vi,de,fr,es,it,pt,ru,ja``.
"""

from __future__ import annotations

import gettext
import io
import json
import logging
import posixpath
import random
import re
import shlex
import shutil
import struct
import subprocess
import tarfile
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlembed.mini.debian import DEFAULT_KEYRING, DEFAULT_MIRROR, DEFAULT_SUITE, _apt_command

logger = logging.getLogger(__name__)

# The Debian set's languages (mlembed.mini.LANGUAGES) without English, which is the document side here.
DEFAULT_LANGUAGES = ("pl", "vi", "de", "fr", "es", "it", "pt", "ru", "ja")
# Command-line and system tools with many full-sentence messages, translated into most of the languages above. Left
# out on purpose: iso-codes (names, not sentences), tasksel-data (task descriptions: the training domain), compiler
# and assembler locales (gcc-*-locales, binutils-common: diagnostics full of code), and every manual-page package.
DEFAULT_PACKAGES = (
    "apt",
    "bash",
    "coreutils",
    "cpio",
    "debconf-i18n",
    "diffutils",
    "dpkg",
    "e2fsprogs-l10n",
    "findutils",
    "gettext-base",
    "gnulib-l10n",
    "gnupg-l10n",
    "grep",
    "kbd",
    "libc-l10n",
    "libgpg-error-l10n",
    "libparted-i18n",
    "make",
    "nano",
    "passwd",
    "procps",
    "psmisc",
    "sed",
    "sudo",
    "tar",
    "util-linux-locales",
    "wget",
    "xz-utils",
)
DEFAULT_CACHE_DIR = Path("~/.cache/mlembed/catalogues").expanduser()
EVAL_FILE = "catalogues_test.parquet"
MAX_QUERIES_PER_LANGUAGE = 200
MAX_CORPUS = 2000
MIN_WORDS = 5
MAX_CHARS = 300
MAX_PLACEHOLDERS = 2  # more, and the message reads as a list of fragments once they are stripped
MAX_COPIED = 0.8  # a translation whose words are this much the English ones is left untranslated
_MARKER = ".mlembed-catalogues"  # apt-get update deletes foreign files in its lists folder: only use our own
_MO_PATH = re.compile(r"^(?:\./)?usr/share/locale/([^/]+)/LC_MESSAGES/([^/]+)\.mo$")
_FORMAT = re.compile(
    r"%(?:\d+\$)?[-+#0']*(?:\d+|\*(?:\d+\$)?)?(?:\.(?:\d+|\*(?:\d+\$)?))?"  # %1$-*2$.3s: position, flags, width
    r"(?:hh|ll|[hlLqjzZt]|I64|I32)?[diouxXeEfFgGaAcspnmCS]"  # length, conversion
    r"|%<\w+>"  # gettext's <inttypes.h> macros, e.g. %<PRIu64>
    r"|%\(\w+\)[-+#0]*\d*(?:\.\d+)?[sdifrx]"  # Python's %(name)s
    r"|\$\{\w+\}|\{\w*(?:[:!][^{}]*)?\}"  # ${name}, {name}, {0}, {}, {:>8}
)
_ACCELERATOR = re.compile(r"\([_&]\w\)|(?<!\w)[_&](?=\w)")  # "(_F)" after CJK labels, "_File", "&Open"
_EMPTY_PAIR = re.compile(  # what is left of "'%s'", "»%s«", "„%s”", "「%s」", "(%s)" ...
    r"(?:'|`|‘|‚)\s*(?:'|’|‘)|(?:\"|“|„|”)\s*(?:\"|”|“)|«\s*»|»\s*«|‹\s*›|›\s*‹|「\s*」|『\s*』|\(\s*\)|\[\s*\]|<\s*>"
)
_OPTION = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")
_CODE = re.compile(r"://|@\w|\w_\w|\w\(\)|[{}<>=|\\]|::|->|--|%\w|\b0x[0-9a-f]+\b", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]+")
_SPACE = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s:：,;]+$")
_LEADING = re.compile(r"^[\s:：,;.\-–—*]+")


@dataclass(frozen=True)
class Pair:
    """One test pair: a translated message (the query) and its English original (the relevant passage)."""

    query: str
    passage: str
    language: str
    package: str


# ----------------------------------------------------------------------------------------------- fetch


def apt_options(lists_dir: Path, suite: str = DEFAULT_SUITE, mirror: str = DEFAULT_MIRROR) -> list[str]:
    """``-o`` options for a private apt state in ``lists_dir``: one suite's ``Packages`` index, no translations.

    Built on ``mlembed.mini.debian._apt_command`` (which also writes ``lists_dir/sources.list``: call this again
    before every apt command, as ``apt-get update`` deletes files it does not know from its lists folder), with the
    ``Packages`` index switched back on and an empty dpkg status, so the candidate versions are the mirror's whatever
    is installed on this machine.
    """
    options = _apt_command(lists_dir, ["none"], suite, mirror, DEFAULT_KEYRING)[2:]
    status = lists_dir.parent / "status"
    status.touch()
    return [
        *options,
        "-oAcquire::IndexTargets::deb::Packages::DefaultEnabled=true",
        f"-oDir::State::status={status}",
    ]


def _run(command: list[str], what: str, cwd: Path | None = None) -> str:
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}\n"
            f"Command: {shlex.join(command)}"
        )
    return result.stdout


def _require(tools: Sequence[str]) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not found: this set is built from Debian packages with apt-get and dpkg-deb; "
            "run it on Debian or Ubuntu (apt and dpkg are in every installation)"
        )


def fetch_packages(
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    packages: Sequence[str] = DEFAULT_PACKAGES,
    suite: str = DEFAULT_SUITE,
    mirror: str = DEFAULT_MIRROR,
) -> dict[str, Path]:
    """Download the mirror's current ``.deb`` of each package into ``cache_dir/debs`` (no root); returns them by name.

    ``apt-get update`` fetches the ``Packages`` index of ``suite`` into ``cache_dir/lists``; ``apt-get download
    --print-uris`` names the candidate files, and only those not already cached are downloaded.

    Raises:
        ValueError: ``cache_dir/lists`` holds files this function did not create (apt would delete them).
        RuntimeError: apt-get is missing, the mirror is unreachable, or a package does not exist in ``suite``.
    """
    _require(["apt-get"])
    cache_dir = Path(cache_dir)
    lists_dir, debs_dir = cache_dir / "lists", cache_dir / "debs"
    if lists_dir.exists() and any(lists_dir.iterdir()) and not (cache_dir / _MARKER).exists():
        raise ValueError(f"{lists_dir} is not empty and was not created by fetch_packages; pass another cache_dir")
    (lists_dir / "partial").mkdir(parents=True, exist_ok=True)
    (cache_dir / _MARKER).touch()  # beside lists_dir, not in it: apt-get update deletes files it does not know there
    debs_dir.mkdir(parents=True, exist_ok=True)
    logger.info("Fetching the Debian %s package index from %s", suite, mirror)
    update = ["apt-get", "update", *apt_options(lists_dir, suite, mirror)]
    result = subprocess.run(update, capture_output=True, text=True)  # exits 0 when the mirror cannot be reached
    if result.returncode != 0 or not any(lists_dir.glob(f"*_dists_{suite}_*_Packages*")):
        raise RuntimeError(
            f"apt-get update got no Packages index of Debian {suite} from {mirror} (is the mirror reachable, the "
            f"suite right?): {result.stderr.strip()[-2000:]}\nCommand: {shlex.join(update)}"
        )
    if "Failed to fetch" in result.stderr:
        logger.warning("apt-get update failed to refresh; using the index of an earlier run: %s", result.stderr)
    uris = _run(
        ["apt-get", "download", "--print-uris", *apt_options(lists_dir, suite, mirror), *sorted(packages)],
        f"apt-get download --print-uris (are all of {sorted(packages)} in Debian {suite}?)",
    )
    files, sizes = {}, {}
    for line in uris.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1].endswith(".deb"):
            name = fields[1].split("_", 1)[0]
            files[name], sizes[name] = debs_dir / fields[1], int(fields[2])
    missing = sorted(set(packages) - set(files))
    if missing:
        raise RuntimeError(f"apt-get named no file for {missing} in Debian {suite}; output:\n{uris[-2000:]}")
    wanted = sorted(name for name, path in files.items() if not path.exists() or path.stat().st_size != sizes[name])
    if wanted:
        logger.info("Downloading %d packages into %s", len(wanted), debs_dir)
        _run(["apt-get", "download", *apt_options(lists_dir, suite, mirror), *wanted], "apt-get download", debs_dir)
    return dict(sorted(files.items()))


def package_version(deb: str | Path) -> str:
    """The ``Version`` field of a ``.deb`` (``dpkg-deb -f``)."""
    _require(["dpkg-deb"])
    return _run(["dpkg-deb", "-f", str(deb), "Version"], f"dpkg-deb -f {deb}").strip()


def read_deb_catalogues(deb: str | Path, languages: Sequence[str] | None = None) -> dict[tuple[str, str], bytes]:
    """The ``.mo`` files of one package as ``{(language, domain): bytes}``, streamed from ``dpkg-deb --fsys-tarfile``.

    Only ``usr/share/locale/<lang>/LC_MESSAGES/<domain>.mo`` members are read (nothing is unpacked to disk, manual
    pages are never touched); a member that is a link to another ``.mo`` of the package gets that file's bytes.
    """
    _require(["dpkg-deb"])
    wanted = set(languages) if languages is not None else None
    found: dict[str, bytes] = {}
    links: dict[str, str] = {}
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as process:
        with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
            for member in archive:
                name = member.name.removeprefix("./")
                match = _MO_PATH.match(name)
                if not match or (wanted is not None and match.group(1) not in wanted):
                    continue
                if member.isfile():
                    found[name] = archive.extractfile(member).read()
                elif member.issym():
                    links[name] = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
                elif member.islnk():
                    links[name] = member.linkname.removeprefix("./")
    if process.returncode != 0:
        raise RuntimeError(f"dpkg-deb --fsys-tarfile {deb} failed (exit {process.returncode}): is it a .deb?")
    for name, target in links.items():
        if target in found:
            found[name] = found[target]
        else:
            logger.debug("%s: %s links outside the catalogues read (%s); skipped", deb, name, target)
    return {_MO_PATH.match(name).group(1, 2): data for name, data in sorted(found.items())}


# ----------------------------------------------------------------------------------------------- parse


def parse_catalogue(data: bytes) -> dict[str, str]:
    """English ``msgid`` -> translation of one ``.mo`` file, read by ``gettext.GNUTranslations``.

    The header entry (empty ``msgid``) and untranslated entries are dropped; a plural entry gives its singular
    pair (``msgid`` and form 0), and a context (``msgctxt``) is removed from the key.

    Raises:
        ValueError: the bytes are not a GNU ``.mo`` catalogue (bad magic number, truncated, bad plural formula).
    """
    try:
        catalogue = gettext.GNUTranslations(io.BytesIO(data))
    except (OSError, ValueError, SyntaxError, LookupError, struct.error) as error:  # UnicodeError is a ValueError
        raise ValueError(f"not a readable GNU .mo catalogue: {error}") from error
    # GNUTranslations has no public iterator; _catalog is its documented-by-source table since Python 2.
    messages: dict[str, str] = {}
    for key, translation in sorted(catalogue._catalog.items(), key=lambda item: str(item[0])):
        if isinstance(key, tuple):
            key, form = key
            if form != 0:
                continue
        msgid = key.split("\x04", 1)[-1]
        if msgid and translation:
            messages.setdefault(msgid, translation)
    return messages


# ----------------------------------------------------------------------------------------------- filter


def clean_message(text: str) -> str:
    """A message as a reader sees it: no format specifiers, accelerators, empty quotes, line breaks, trailing colons.

    ``"Cannot open '%s': %s\\n"`` -> ``"Cannot open"``; ``"_Save as..."`` -> ``"Save as..."``; ``%%`` -> ``%``. A
    space left before ``,``, ``.`` or ``)`` goes; one before ``; : ! ?`` stays (French typography has it).
    """
    text = _FORMAT.sub("", text.replace("%%", "\0"))
    text = _ACCELERATOR.sub("", text).replace("\0", "%")
    for _ in range(2):  # "('%s')" -> "('')" -> "()" -> ""
        text = _EMPTY_PAIR.sub(" ", text)
    text = _SPACE.sub(" ", text)
    text = _TRAILING.sub("", _LEADING.sub("", text))
    return re.sub(r"([(\[])\s+", r"\1", re.sub(r"\s+([,.)\]])", r"\1", text)).strip()


def english_key(text: str) -> str:
    """What makes two English messages the same document: their lower-cased words (case and punctuation ignored)."""
    return " ".join(_WORD.findall(text.casefold()))


def skip_reason(msgid: str, english: str, translation: str) -> str | None:
    """Why a (raw msgid, cleaned English, cleaned translation) triple is not a test pair, or ``None`` to keep it.

    Kept: sentence-like English of ``MIN_WORDS`` to ``MAX_CHARS`` with mostly letters, at most ``MAX_PLACEHOLDERS``
    format specifiers, no command-line options (``--all``, ``-n``), no code or addresses (``=``, ``<...>``,
    ``foo_bar``, URLs, e-mail), and a translation that is not mostly the English words again (``MAX_COPIED``).
    """
    if _OPTION.search(msgid):
        return "options"
    if len(_FORMAT.findall(msgid.replace("%%", ""))) > MAX_PLACEHOLDERS:
        return "placeholders"
    if _CODE.search(english):
        return "code"
    if len(_WORD.findall(english)) < MIN_WORDS:
        return "short"
    if len(english) > MAX_CHARS:
        return "long"
    visible = english.replace(" ", "")
    if sum(char.isalpha() for char in visible) < 0.8 * len(visible):
        return "symbols"
    if not any(char.isalpha() for char in translation):
        return "empty_translation"
    words = english_key(translation).split()
    if sum(word in set(english_key(english).split()) for word in words) >= MAX_COPIED * len(words):
        return "untranslated"
    return None


# ----------------------------------------------------------------------------------------------- pairs


def candidate_pairs(
    catalogues: Mapping[str, Mapping[tuple[str, str], bytes]], languages: Sequence[str]
) -> tuple[dict[str, dict[str, Pair]], dict[str, Counter]]:
    """Usable pairs by English key, then by language, and the skip counts per language.

    Packages and domains are read in sorted order; an English message met again (the same words, in another domain
    or package: gnulib messages are in many) keeps its first English text and, per language, its first usable
    translation. A translation shared by two different English messages in one language is ambiguous (two right
    answers), so both are dropped for that language.
    """
    candidates: dict[str, dict[str, Pair]] = defaultdict(dict)
    english_text: dict[str, str] = {}
    skipped: dict[str, Counter] = {language: Counter() for language in languages}
    for package in sorted(catalogues):
        for (language, domain), data in sorted(catalogues[package].items()):
            if language not in skipped:
                continue
            try:
                messages = parse_catalogue(data)
            except ValueError as error:
                logger.warning("%s: %s/%s.mo skipped: %s", package, language, domain, error)
                skipped[language]["unreadable_catalogue"] += 1
                continue
            for msgid, translation in messages.items():
                english, query = clean_message(msgid), clean_message(translation)
                reason = skip_reason(msgid, english, query)
                if reason:
                    skipped[language][reason] += 1
                    continue
                key = english_key(english)
                if language in candidates[key]:
                    skipped[language]["duplicate_english"] += 1
                    continue
                document = english_text.setdefault(key, english)
                candidates[key][language] = Pair(query, document, language, package)
    for language in languages:
        by_query: dict[str, list[str]] = defaultdict(list)
        for key, pairs in candidates.items():
            if language in pairs:
                by_query[pairs[language].query.casefold()].append(key)
        for keys in by_query.values():
            if len(keys) > 1:
                for key in keys:
                    del candidates[key][language]
                skipped[language]["ambiguous_translation"] += len(keys)
    return {key: pairs for key, pairs in candidates.items() if pairs}, skipped


def assign_pairs(
    candidates: Mapping[str, Mapping[str, Pair]], languages: Sequence[str], per_language: int, seed: int = 0
) -> list[Pair]:
    """Give each English message to at most one language, balanced, up to ``per_language`` queries each.

    The English keys are shuffled with ``seed`` (from sorted order), and each goes to the language, among those
    that translate it and are still under the cap, with the fewest queries so far (ties: the order of
    ``languages``). So every English message in the file is the target of exactly one query, the corpus (every
    distinct document, as ``load_retrieval_data`` builds it) is shared by all languages, and per-language scores
    are measured against the same distractors. A query text already used by another language is skipped.
    """
    order = sorted(candidates)
    random.Random(seed).shuffle(order)
    counts = dict.fromkeys(languages, 0)
    used_queries: set[str] = set()
    chosen: list[Pair] = []
    for key in order:
        open_languages = [
            language
            for language in languages
            if counts[language] < per_language
            and language in candidates[key]
            and candidates[key][language].query not in used_queries
        ]
        if not open_languages:
            if all(count >= per_language for count in counts.values()):
                break
            continue
        language = min(open_languages, key=lambda name: counts[name])
        pair = candidates[key][language]
        chosen.append(pair)
        used_queries.add(pair.query)
        counts[language] += 1
    return sorted(chosen, key=lambda pair: (languages.index(pair.language), pair.passage))


def write_eval(out_dir: str | Path, pairs: Sequence[Pair]) -> Path:
    """``<out>/eval/catalogues_test.parquet`` in the Debian eval layout: ``query, passage, language, package``."""
    import pandas as pd

    path = Path(out_dir) / "eval" / EVAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [(pair.query, pair.passage, pair.language, pair.package) for pair in pairs]
    pd.DataFrame(rows, columns=["query", "passage", "language", "package"]).to_parquet(path, index=False)
    return path


# ----------------------------------------------------------------------------------------------- build


def _check_languages(languages: Sequence[str]) -> list[str]:
    kept = [language for language in dict.fromkeys(languages) if language.split("@")[0].split("_")[0] != "en"]
    if len(kept) < len(dict.fromkeys(languages)):
        logger.info("English is the document side of this set; dropped it from the query languages")
    if not kept:
        raise ValueError(f"give at least one query language besides English, e.g. {list(DEFAULT_LANGUAGES)}")
    return kept


def build_catalogue_testset(
    out_dir: str | Path,
    languages: Sequence[str] = DEFAULT_LANGUAGES,
    packages: Sequence[str] = DEFAULT_PACKAGES,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    max_queries_per_language: int = MAX_QUERIES_PER_LANGUAGE,
    max_corpus: int = MAX_CORPUS,
    seed: int = 0,
    *,
    suite: str = DEFAULT_SUITE,
    mirror: str = DEFAULT_MIRROR,
    debs: Mapping[str, str | Path] | None = None,
) -> dict:
    """Fetch the packages, pair translated messages with their English originals, write the TEST-ONLY eval file.

    Each language gets up to ``min(max_queries_per_language, max_corpus // len(languages))`` queries, so the corpus
    (one distinct English message per query) stays within ``max_corpus``. ``debs`` (package name -> ``.deb``) skips
    the download, for tests and offline rebuilds. Returns (and writes to ``summary.json``) the counts.

    Raises:
        ValueError: no query language besides English, or a cap below 1.
        RuntimeError: apt-get / dpkg-deb missing or failing (the message carries the command).
    """
    languages = _check_languages(languages)
    if max_queries_per_language < 1 or max_corpus < len(languages):
        raise ValueError(
            f"caps must allow one query per language: max_queries_per_language={max_queries_per_language} (>= 1), "
            f"max_corpus={max_corpus} (>= {len(languages)} languages)"
        )
    start = time.perf_counter()
    debs = debs if debs is not None else fetch_packages(cache_dir, packages, suite, mirror)
    files = {name: Path(path) for name, path in sorted(debs.items())}
    catalogues = {name: read_deb_catalogues(path, languages) for name, path in files.items()}
    candidates, skipped = candidate_pairs(catalogues, languages)
    per_language = min(max_queries_per_language, max_corpus // len(languages))
    pairs = assign_pairs(candidates, languages, per_language, seed)
    path = write_eval(out_dir, pairs)
    queries = Counter(pair.language for pair in pairs)
    summary = {
        "use": "TEST ONLY: out-of-domain held-out set; never train on it",
        "source": f"{mirror} {suite} main, usr/share/locale/*/LC_MESSAGES/*.mo",
        "direction": "query = translated message, passage = English original, corpus = all English messages",
        "seed": seed,
        "max_queries_per_language": per_language,
        "corpus": len({pair.passage for pair in pairs}),
        "queries": len(pairs),
        "languages": {
            language: {
                "queries": queries[language],
                "candidates": sum(language in pairs_ for pairs_ in candidates.values()),
                "catalogues": sum(language == lang for found in catalogues.values() for lang, _ in found),
                "skipped": dict(sorted(skipped[language].items())),
            }
            for language in languages
        },
        "packages": {
            name: {
                "version": package_version(deb),
                "file": deb.name,
                "catalogues": len(catalogues[name]),
                "queries": sum(pair.package == name for pair in pairs),
            }
            for name, deb in files.items()
        },
        "files": [str(path)],
    }
    short = [language for language in languages if queries[language] < per_language]
    if short:
        logger.warning("fewer than %d usable messages for %s", per_language, short)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    (Path(out_dir) / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary
