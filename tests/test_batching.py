"""The one sort-and-batch and prompt helper (`modeling_mlembed.length_sorted_batches`, `resolve_prompt`) that
`MLEmbedModel.encode`, the ONNX runner and the corpus encoder share."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import WORDS, tiny_model

from modeling_mlembed import length_sorted_batches, resolve_prompt


def texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, 8))) for _ in range(n)]


@pytest.mark.parametrize("n, batch_size", [(0, 4), (1, 4), (4, 4), (23, 4), (23, 50), (64, 7)])
def test_batches_are_the_stable_longest_first_order_cut_into_batch_size(n, batch_size):
    docs = texts(n, seed=n)
    expected = sorted(range(n), key=lambda i: (-len(docs[i]), i))  # longest first, ties in input order
    batches = list(length_sorted_batches(docs, batch_size))
    assert [list(b) for b in batches] == [expected[i : i + batch_size] for i in range(0, n, batch_size)]
    assert all(b.dtype == np.int64 for b in batches)


def test_texts_already_in_order_are_not_sorted_again(monkeypatch):
    docs = sorted(texts(40), key=len, reverse=True)
    monkeypatch.setattr(np, "argsort", lambda *args, **kwargs: pytest.fail("sorted twice"))
    assert np.concatenate(list(length_sorted_batches(docs, 8))).tolist() == list(range(40))


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        list(length_sorted_batches(["a"], 0))


def test_resolve_prompt():
    prompts = {"query": "Q: ", "document": ""}
    assert resolve_prompt(prompts, "query") == "Q: "
    assert resolve_prompt(prompts, prompt="X: ") == "X: "
    assert resolve_prompt(None) == ""
    with pytest.raises(ValueError, match="give prompt_name or prompt, not both"):
        resolve_prompt(prompts, "query", "X: ")
    with pytest.raises(ValueError, match=r"prompt_name must be one of \['document', 'query'\], got 'title'"):
        resolve_prompt(prompts, "title")
    with pytest.raises(ValueError, match=r"prompt_name must be one of \[\], got 'query'"):
        resolve_prompt(None, "query")


def test_encode_puts_every_row_back_in_input_order():
    model = tiny_model()
    docs = texts(37)
    one_by_one = np.concatenate([model.encode([doc], prompt="Q: ") for doc in docs])
    np.testing.assert_allclose(model.encode(docs, prompt="Q: ", batch_size=5), one_by_one, atol=1e-5)


def test_the_corpus_encoder_sorts_once(monkeypatch):
    """`ShardEncoder.embed` sorts the texts and hands `encode` chunks in order: one sort, not one per chunk too."""
    from mlembed.corpus.encoder import EncodeJob, ShardEncoder

    model = tiny_model()
    encoder = ShardEncoder.__new__(ShardEncoder)  # the model in memory, no folder to load
    encoder.job, encoder.model = EncodeJob("tiny", "", None, batch_size=2), model
    docs = texts(80)
    expected = model.encode(docs, batch_size=2, prompt_name="document")
    calls = []
    argsort = np.argsort
    monkeypatch.setattr(np, "argsort", lambda *args, **kwargs: calls.append(1) or argsort(*args, **kwargs))
    got = encoder.embed(docs, "document")
    assert len(calls) == 1
    np.testing.assert_array_equal(got, expected)  # the same batches, so the same numbers to the bit
