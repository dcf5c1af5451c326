"""Hard negatives for (query, passage) pairs of plain strings, mined lexically: no model needed.

Why lexical: a data builder that runs before any model exists (or on a CPU in seconds) still wants negatives that
are harder than random ones. Candidates are ranked by the summed inverse document frequency (IDF) of the words
their *query* shares with the row's query (BM25-like term weighting; Robertson and Zaragoza, "The Probabilistic
Relevance Framework: BM25 and Beyond", 2009); `negatives` are drawn (seeded) from the top `depth`, as the ML-Embed
recipe samples 7 of 24 mined negatives, and topped up with random pool passages.

False negatives are the main risk of mining: a candidate with the row's own passage text, or sharing one of the
row's `groups` (e.g. the same source document or package), is never used.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from itertools import chain, islice
from typing import NamedTuple

from tqdm.auto import tqdm

DEFAULT_DEPTH = 24
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")


class Example(NamedTuple):
    """One (query, passage) pair; `groups` are keys (any strings) that mark candidates too close to be negatives."""

    query: str
    passage: str
    groups: frozenset[str] = frozenset()


def tokens(text: str) -> set[str]:
    """Lower-cased words of two or more characters; words in CJK scripts (no spaces) become character bigrams."""
    found: set[str] = set()
    for word in re.findall(r"\w+", text.lower()):
        if _CJK.search(word):
            found.update(word[i : i + 2] for i in range(max(1, len(word) - 1)))
        elif len(word) > 1:
            found.add(word)
    return found


def conflicts(candidate: Example, row: Example) -> bool:
    """A candidate too close to the row to be a safe negative: the same passage text or a shared group key."""
    return candidate.passage == row.passage or bool(candidate.groups & row.groups)


def mine_negatives(
    rows: Sequence[Example],
    pool: Sequence[Example],
    negatives: int = 7,
    seed: int | float | str = 0,
    depth: int = DEFAULT_DEPTH,
) -> list[list[str]]:
    """`negatives` distinct passages from `pool` for every row, the lexically closest non-conflicting ones first.

    Args:
        rows: the pairs that need negatives.
        pool: the candidates (may include `rows`; conflicts are skipped).
        negatives: passages per row.
        seed: seed of the draws (the result is deterministic for a given seed and input order).
        depth: draw from this many top-ranked candidates.

    Raises:
        ValueError: the pool cannot supply `negatives` distinct non-conflicting passages for a row.
    """
    rng = random.Random(seed)
    documents = [tokens(example.query) for example in pool]
    df = Counter(token for document in documents for token in document)
    max_df = max(50, len(pool) // 20)  # very common words carry no signal and cost the most
    index: dict[str, list[int]] = defaultdict(list)
    for i, document in enumerate(documents):
        for token in document:
            if df[token] <= max_df:
                index[token].append(i)
    mined = []
    for row in tqdm(rows, desc="hard negatives", leave=False, disable=len(rows) < 500):
        scores: Counter = Counter()
        for token in tokens(row.query):
            for i in index.get(token, ()):
                scores[i] += math.log(len(pool) / df[token])
        ordered = (i for i, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0])))
        ranked = list(islice((i for i in ordered if not conflicts(pool[i], row)), depth))
        chosen = sorted(rng.sample(ranked, min(negatives, len(ranked))))
        picked = list(dict.fromkeys(pool[i].passage for i in chosen))
        if len(picked) < negatives:
            picked = _fill_random(row, pool, picked, negatives, rng)
        mined.append(picked)
    return mined


def _shuffled(size: int, rng: random.Random) -> Iterator[int]:
    order = list(range(size))
    rng.shuffle(order)
    yield from order


def _fill_random(
    row: Example, pool: Sequence[Example], picked: list[str], negatives: int, rng: random.Random
) -> list[str]:
    """Top up with random pool passages: a few cheap draws first, a full shuffled scan only if they fall short."""
    draws = (rng.randrange(len(pool)) for _ in range(20 * negatives))
    for i in chain(draws, _shuffled(len(pool), rng)):
        if len(picked) == negatives:
            return picked
        if not conflicts(pool[i], row) and pool[i].passage not in picked:
            picked.append(pool[i].passage)
    if len(picked) < negatives:
        raise ValueError(
            f"only {len(picked)} usable negatives for the query {row.query!r}; need {negatives}: the pool of "
            f"{len(pool)} passages is too small"
        )
    return picked
