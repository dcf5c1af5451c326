"""Elastic retrieval in embedded Qdrant: the funnel equals exact search where it must, Qdrant computes exactly the
funnel's math, queries use the manifest's setting, and a mismatching model or setting is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_model

pytest.importorskip("qdrant_client")
pytest.importorskip("pyarrow")

from mlembed.cli import main  # noqa: E402
from mlembed.corpus import encode_corpus, read_corpus, write_vectors  # noqa: E402
from mlembed.corpus.search import build_index, collection_config, index_info, open_db, query_vectors, search  # noqa: E402


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def exact_top(corpus: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    return np.argsort(-(queries @ corpus.T), axis=1, kind="stable")[:, :k]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """2,000 random unit vectors (32 dims) and 20 queries, each with 10 planted neighbours q + small noise that
    keeps the sign of every dimension: their binary 8-dim prefix is the query's own sign pattern, the best score a
    binary prefix can give, so a shortlist of 50 must hold them (checked below), and rescoring must order them."""
    rng = np.random.default_rng(0)
    queries = unit(rng.standard_normal((20, 32)))
    docs = [unit(rng.standard_normal((1800, 32)))]
    for q in queries:
        docs.append(unit(q + 0.05 * np.abs(rng.standard_normal((10, 32))) * np.sign(q)))
    corpus = np.concatenate(docs)
    folder = tmp_path_factory.mktemp("planted")
    write_vectors(folder, corpus, ids=[f"doc{i}" for i in range(len(corpus))], shard_size=700)
    return folder, corpus, queries


def test_the_funnel_top10_is_exact_search_where_it_must_be(planted):
    folder, corpus, queries = planted
    signs = np.sign(corpus[:, :8])
    ties = [int(np.sum(np.all(signs[:1800] == np.sign(q[:8]), axis=1))) for q in queries]
    assert max(ties) + 10 <= 50  # precondition: random documents with the query's sign pattern leave room
    client = open_db(":memory:")
    info = build_index(folder, ":memory:", mode="funnel", dim=8, precision="binary", client=client)
    assert info["bytes_per_doc"] == {"first_stage": 1.0, "rescore": 128.0, "total": 129.0}
    hits = query_vectors(client, queries, info, k=10, shortlist=50)
    expected = exact_top(corpus, queries)
    assert [[row for row, _, _ in h] for h in hits] == expected.tolist()
    np.testing.assert_allclose(
        [[s for _, s, _ in h] for h in hits], np.take_along_axis(queries @ corpus.T, expected, 1), atol=1e-5
    )
    assert hits[0][0][2] == f"doc{expected[0][0]}"  # the corpus id travels in the payload

    single = build_index(folder, ":memory:", "short", mode="single", dim=8, precision="binary", client=client)
    alone = query_vectors(client, queries, single, "short", k=10)
    assert [[row for row, _, _ in h] for h in alone] != expected.tolist()  # the shortlist alone is not exact


def test_qdrant_computes_the_funnels_math(planted):
    """Against an independent numpy funnel (int8 prefix shortlist of 30, full-vector rescoring) on random queries."""
    folder, corpus, _ = planted
    queries = unit(np.random.default_rng(1).standard_normal((10, 32)))
    client = open_db(":memory:")
    info = build_index(folder, ":memory:", mode="funnel", dim=16, precision="int8", client=client)
    hits = query_vectors(client, queries, info, k=10, shortlist=30)
    ranges = np.asarray(info["int8_ranges"], dtype=np.float32)
    prefix = unit(corpus[:, :16])
    codes = np.clip(np.floor((prefix - ranges[0]) / ((ranges[1] - ranges[0]) / 255)), 0, 255)  # ST's buckets
    short = unit(ranges[0] + (codes + 0.5) * (ranges[1] - ranges[0]) / 255)
    for q, got in zip(queries, hits):
        shortlist = np.argsort(-(short @ unit(q[:16])), kind="stable")[:30]
        best = shortlist[np.argsort(-(corpus[shortlist] @ q), kind="stable")][:10]
        assert [row for row, _, _ in got] == best.tolist()


def test_server_collections_keep_the_shortlist_quantised_and_the_full_vectors_on_disk():
    from qdrant_client import models

    server = collection_config("funnel", 384, 128, "binary", "float16", server=True)
    assert isinstance(server["short"].quantization_config, models.BinaryQuantization)
    assert server["full"].on_disk and server["full"].datatype == models.Datatype.FLOAT16
    embedded = collection_config("funnel", 384, 128, "binary", "float16", server=False)
    assert embedded["short"].quantization_config is None and not embedded["full"].on_disk
    int8 = collection_config("single", 384, 64, "int8", "float32", server=True)["dense"]
    assert isinstance(int8.quantization_config, models.ScalarQuantization)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    root = tmp_path_factory.mktemp("enc")
    for name, seed in (("m", 0), ("other", 1)):
        model = tiny_model(seed=seed)
        model.save_pretrained(root / name)
        model.tokenizer.save_pretrained(root / name)
    docs = ["cat dog", "sun moon rain", "ship road", "fish bird", "tree rock", "snow wind lamp", "door car", "moon"]
    lines = [json.dumps({"id": f"d{i}", "text": t}) for i, t in enumerate(docs * 3)]
    (root / "docs.jsonl").write_text("\n".join(lines) + "\n")
    encode_corpus(str(root / "m"), root / "docs.jsonl", root / "corpus", layers=2, shard_size=10, precision="int8")
    return root


def test_search_encodes_the_query_at_the_manifests_setting(encoded, capsys):
    from modeling_mlembed import MLEmbedModel

    db = str(encoded / "db")
    main(["index", str(encoded / "corpus"), "--db", db, "--dim", "16"])
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 24 and info["bytes_per_doc"] == {"first_stage": 2.0, "rescore": 32.0, "total": 34.0}
    main(["search", db, "cat dog", "moon", "-k", "3", "--shortlist", "24"])
    results = json.loads(capsys.readouterr().out)
    model = MLEmbedModel.from_pretrained(encoded / "m")
    query = model.encode(["cat dog", "moon"], layers=2, prompt_name="query")  # independent of search.py
    ids, vectors = zip(*read_corpus(encoded / "corpus"))
    ids, vectors = sum(ids, []), np.concatenate(vectors)
    for result, q in zip(results, query):  # shortlist = the whole corpus: exact search over the stored vectors
        top = np.argsort(-(vectors @ q), kind="stable")[:3]
        assert [h["id"] for h in result["hits"]] == [ids[i] for i in top]
        np.testing.assert_allclose([h["score"] for h in result["hits"]], (vectors @ q)[top], atol=1e-5)


def test_a_model_or_setting_that_does_not_match_the_manifest_is_refused(encoded, capsys):
    client = open_db(":memory:")
    build_index(encoded / "corpus", ":memory:", client=client)
    with pytest.raises(ValueError, match=r"does not match the corpus manifest .*layers=2.*cosine"):
        search(["cat"], ":memory:", model=str(encoded / "other"), client=client)
    with pytest.raises(ValueError, match="layers=3 does not match the index, whose corpus was encoded at layers=2"):
        search(["cat"], ":memory:", layers=3, client=client)
    assert search(["cat"], ":memory:", layers=2, client=client)[0]  # the recorded setting, spelled out, is fine
    with pytest.raises(ValueError, match="already has a collection 'corpus'; pass --recreate"):
        build_index(encoded / "corpus", ":memory:", client=client)
    assert client.count("corpus").count == 24 and index_info(client)["mode"] == "funnel"  # the old one intact
    with pytest.raises(ValueError, match=r"dim must be an integer in 1..32"):
        build_index(encoded / "corpus", ":memory:", "x", dim=64, client=client)
    with pytest.raises(ValueError, match=r"precision must be one of \['binary', 'int8', 'float32'\]"):
        build_index(encoded / "corpus", ":memory:", "x", precision="float16", client=client)
