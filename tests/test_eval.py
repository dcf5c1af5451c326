"""Elastic-profile evaluation: metrics against hand-computed rankings, validation before encoding, sweep outputs,
and the mteb wrapper end to end on local tasks (offline)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import HIDDEN, VOCAB, tiny_model

from mlembed.cli import main as cli
from mlembed.eval import (
    build_grid,
    load_retrieval_data,
    markdown_table,
    metrics_by_language,
    pairs_to_data,
    pareto_front,
    retrieval_metrics,
    sweep,
    write_results,
)

PAIRS = [
    ("what is the capital of france", "paris is the capital of france", "en"),
    ("what is the capital of france", "france's capital city is paris", "en"),
    ("how tall is mount everest", "everest is 8849 metres high", "en"),
    ("wie hoch ist die zugspitze", "die zugspitze ist 2962 meter hoch", "de"),
    ("wer schrieb faust", "goethe schrieb faust", "de"),
    ("who wrote hamlet", "hamlet was written by shakespeare", "en"),
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def pairs_file(tmp_path):
    rows = [{"query": q, "passage": d, "language": lang} for q, d, lang in PAIRS]
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


@pytest.fixture
def spy_model():
    """A tiny model whose `encode` records its calls (to prove validation happens before any encoding)."""
    model = tiny_model("qwen3", mel_rank=HIDDEN)
    calls = []
    real_encode = model.encode

    def encode(*args, **kwargs):
        calls.append((args, kwargs))
        return real_encode(*args, **kwargs)

    model.encode = encode
    model.encode_calls = calls
    return model


# ------------------------------------------------------------------------------------------------------ metrics
def test_metrics_match_hand_computed_ranking():
    scores = np.array(
        [
            [0.1, 0.9, 0.3, 0.5],  # ranking 1, 3, 2, 0: relevant doc 2 at rank 3
            [0.8, 0.2, 0.7, 0.1],  # ranking 0, 2, 1, 3: relevant docs 2, 3 at ranks 2 and 4
            [0.6, 0.4, 0.2, 0.0],  # ranking 0, 1, 2, 3: relevant doc 0 at rank 1
        ]
    )
    relevant = [{2}, {2, 3}, {0}]
    ndcg = [
        (1 / math.log2(4)) / 1.0,
        (1 / math.log2(3) + 1 / math.log2(5)) / (1.0 + 1 / math.log2(3)),
        1.0,
    ]
    mrr = [1 / 3, 1 / 2, 1.0]
    recall_1 = [0.0, 0.0, 1.0]
    recall_10 = [1.0, 1.0, 1.0]
    got = retrieval_metrics(scores, relevant)
    assert got["ndcg_at_10"] == pytest.approx(sum(ndcg) / 3)
    assert got["mrr_at_10"] == pytest.approx(sum(mrr) / 3)
    assert got["recall_at_1"] == pytest.approx(sum(recall_1) / 3)
    assert got["recall_at_10"] == pytest.approx(sum(recall_10) / 3)

    by_lang = metrics_by_language(scores, relevant, ["en", "de", "en"])
    assert by_lang["en"]["ndcg_at_10"] == pytest.approx((ndcg[0] + ndcg[2]) / 2)
    assert by_lang["de"]["mrr_at_10"] == pytest.approx(mrr[1])


def test_metrics_cut_off_at_ten():
    # relevant doc 0 ranked 11th of 12, relevant doc 1 ranked 10th: only doc 1 counts at @10
    scores = np.array([[5.0, 11.5, 20, 19, 18, 17, 16, 15, 14, 13, 12, 1.0]])  # docs 2..10 take ranks 1..9
    ranking = list(np.argsort(-scores[0]))
    assert ranking.index(1) + 1 == 10 and ranking.index(0) + 1 == 11
    got = retrieval_metrics(scores, [{0, 1}])
    assert got["ndcg_at_10"] == pytest.approx((1 / math.log2(11)) / (1 + 1 / math.log2(3)))
    assert got["mrr_at_10"] == pytest.approx(1 / 10)
    assert got["recall_at_10"] == pytest.approx(0.5)
    assert got["recall_at_1"] == 0.0


def test_metrics_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"scores must be \(queries, documents\) with 2 rows"):
        retrieval_metrics(np.zeros((3, 4)), [{0}, {1}])
    with pytest.raises(ValueError, match="at least one relevant document"):
        retrieval_metrics(np.zeros((1, 4)), [set()])


def test_pareto_front_by_hand():
    points = [(1.0, 0.5), (2.0, 0.4), (2.0, 0.7), (4.0, 0.7), (8.0, 0.9)]
    assert pareto_front(points) == [0, 2, 4]  # (2, .4) worse than (1, .5); (4, .7) costs more than (2, .7)
    assert pareto_front(points, lower_cost_is_better=False) == [4]


# -------------------------------------------------------------------------------------------------- validation
def test_load_groups_pairs(pairs_file):
    data = load_retrieval_data(pairs_file)
    assert data.queries[0] == PAIRS[0][0] and len(data.queries) == 5 and len(data.corpus) == 6
    assert data.relevant[0] == {0, 1}
    assert data.languages == ["en", "en", "de", "de", "en"]


def test_parquet_matches_jsonl(tmp_path, pairs_file):
    path = tmp_path / "pairs.parquet"
    pd.DataFrame([{"query": q, "document": d} for q, d, _ in PAIRS]).to_parquet(path)  # the older column name
    data = load_retrieval_data(path)
    assert data.corpus == load_retrieval_data(pairs_file).corpus and data.languages is None


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ([{"query": "a", "text": "b"}], r"bad\.jsonl: missing column\(s\) \['passage'\]"),
        (
            [{"query": "a", "passage": "b"}, {"query": " ", "passage": "c"}],
            r"bad\.jsonl: row 2, column 'query': empty text",
        ),
        ([{"query": "a", "passage": 3}], r"bad\.jsonl: row 1, column 'passage': expected a string, got int"),
        ([{"query": "a", "passage": "b", "language": None}], r"row 1, column 'language': expected a string"),
    ],
)
def test_bad_rows_are_rejected_before_encoding(tmp_path, spy_model, rows, match):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ValueError, match=match):
        sweep(spy_model, path, progress=False)
    assert spy_model.encode_calls == []


def test_empty_and_broken_files(tmp_path, spy_model):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"empty\.jsonl: the file is empty"):
        sweep(spy_model, empty, progress=False)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"query": "a", "passage": "b"}\n{"query": \n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.jsonl: row 2: invalid JSON"):
        load_retrieval_data(broken)
    with pytest.raises(ValueError, match="no such file"):
        load_retrieval_data(tmp_path / "missing.jsonl")
    assert spy_model.encode_calls == []


def test_parquet_null_text_names_row(tmp_path):
    path = tmp_path / "nulls.parquet"
    pd.DataFrame({"query": ["a", "b"], "passage": ["x", None]}).to_parquet(path)
    with pytest.raises(ValueError, match=r"nulls\.parquet: row 2, column 'passage': expected a string, got NoneType"):
        load_retrieval_data(path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layers": [2, 9]}, r"layers must be an integer in 1\.\.4"),
        ({"dims": [0]}, r"dim must be an integer in 1\.\.32"),
        ({"ranks": [64]}, r"rank must be an integer in 1\.\.32"),
        ({"grid": "diagonal"}, r"grid must be one of \('axes', 'full'\)"),
    ],
)
def test_out_of_range_settings_rejected_before_encoding(pairs_file, spy_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sweep(spy_model, pairs_file, progress=False, **kwargs)
    assert spy_model.encode_calls == []


def test_rank_on_dense_model_rejected(pairs_file):
    with pytest.raises(ValueError, match="needs a factorised embedding"):
        sweep(tiny_model("qwen3", mel_rank=None), pairs_file, ranks=[16], progress=False)


# -------------------------------------------------------------------------------------------------------- sweep
def test_grids():
    model = tiny_model("qwen3", mel_rank=HIDDEN)
    axes = build_grid(model, layers=[2], dims=[8, 16], ranks=[16])
    points = [(s["layers"], s["dim"], s["rank"], s["axis"]) for s in axes]
    assert points == [
        (4, 32, 32, "full"),
        (2, 32, 32, "layers"),
        (4, 16, 32, "dim"),
        (4, 8, 32, "dim"),
        (4, 32, 16, "rank"),
        (2, 8, 16, "combined"),
    ]
    full = build_grid(model, layers=[2], dims=[8, 16], ranks=[16], grid="full")
    assert len(full) == 2 * 3 * 2 and len({(s["layers"], s["dim"], s["rank"]) for s in full}) == 12
    assert [s["axis"] for s in build_grid(tiny_model("qwen3", mel_rank=None), dims=[8])] == ["full", "dim"]


def test_sweep_outputs(tmp_path, pairs_file):
    model = tiny_model("qwen3", mel_rank=HIDDEN)
    results = sweep(model, pairs_file, layers=[2], dims=[8], ranks=[16], batch_size=4, progress=False)
    assert [(r["layers"], r["dim"], r["rank"]) for r in results] == [
        (4, 32, 32),
        (2, 32, 32),
        (4, 8, 32),
        (4, 32, 16),
        (2, 8, 16),
    ]
    for r in results:
        assert all(0.0 <= r[m] <= 1.0 for m in ("ndcg_at_10", "mrr_at_10", "recall_at_1", "recall_at_10"))
        assert set(r["by_language"]) == {"de", "en"}
        assert r["index_bytes_per_doc"] == 4 * r["dim"] and r["throughput"] > 0
        assert r["n_queries"] == 5 and r["n_documents"] == 6

    # the dim=8 point (cached full-width encode, truncated) equals a direct encode at dim=8
    data = load_retrieval_data(pairs_file)
    queries = model.encode(data.queries, dim=8, prompt_name="query")
    corpus = model.encode(data.corpus, dim=8, prompt_name="document")
    direct = retrieval_metrics(queries @ corpus.T, data.relevant)
    assert results[2]["ndcg_at_10"] == pytest.approx(direct["ndcg_at_10"], abs=1e-6)
    assert results[2]["mrr_at_10"] == pytest.approx(direct["mrr_at_10"], abs=1e-6)

    paths = write_results(results, tmp_path / "out")
    saved = json.loads(paths["json"].read_text())
    assert len(saved) == 5 and saved[4]["axis"] == "combined"
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["plot"].stat().st_size > 1000
    table = paths["table"].read_text()
    assert table == markdown_table(results)
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 5 and "nDCG@10 de" in lines[0]
    assert lines[2].startswith(f"| 4 | 32 | 32 | {results[0]['ndcg_at_10']:.4f} |")


def test_sweep_uses_query_and_document_prompts(pairs_file, spy_model):
    sweep(spy_model, pairs_file, progress=False)
    prompts = [kwargs.get("prompt_name") for _, kwargs in spy_model.encode_calls]
    assert prompts == ["query", "query", "document"]  # warm-up, queries, corpus


def test_cli_main(tmp_path, pairs_file, capsys):
    model = tiny_model("qwen3", mel_rank=HIDDEN)
    model.save_pretrained(tmp_path / "model")
    model.tokenizer.save_pretrained(tmp_path / "model")
    out = tmp_path / "eval"
    argv = [
        "eval",
        str(tmp_path / "model"),
        "--data",
        str(pairs_file),
        "--depths",
        "2",
        "--dims",
        "16",
        "-o",
        str(out),
    ]
    assert cli(argv) == 0
    assert {p.name for p in out.iterdir()} == {"table.md", "results.json", "plot.png"}
    assert capsys.readouterr().out == (out / "table.md").read_text()
    assert len(json.loads((out / "results.json").read_text())) == 4  # full, layers, dim, combined


# --------------------------------------------------------------------------------------------------------- mteb
@pytest.fixture(scope="module")
def mteb_results():
    """One mteb run (retrieval + STS) of a tiny model at layers=2, dim=16, rank=16, recording every encode."""
    mteb = pytest.importorskip("mteb")
    from mlembed.eval.mteb_wrapper import MLEmbedMTEBEncoder, local_sts_task, retrieval_task_from_data

    model = tiny_model("qwen3", mel_rank=HIDDEN)
    data = pairs_to_data([q for q, _, _ in PAIRS], [d for _, d, _ in PAIRS])
    calls = []
    real_encode = model.encode
    model.encode = lambda texts, **kw: calls.append((list(texts), kw)) or real_encode(texts, **kw)
    encoder = MLEmbedMTEBEncoder(model, layers=2, dim=16, rank=16, batch_size=4)
    sts = local_sts_task(
        "TinySTS",
        [("a cat sits", "a cat is sitting"), ("a dog runs", "stock prices fell"), ("rain", "it rains")],
        [4.5, 0.5, 4.0],
    )
    results = mteb.evaluate(encoder, [retrieval_task_from_data("TinyRetrieval", data), sts], cache=None)
    return dict(model=model, data=data, calls=calls, encoder=encoder, results=results)


def test_mteb_retrieval_matches_our_metrics(mteb_results):
    model, data, calls = mteb_results["model"], mteb_results["data"], mteb_results["calls"]
    retrieval = next(r for r in mteb_results["results"].task_results if r.task_name == "TinyRetrieval")
    scores = retrieval.scores["test"][0]
    query_prompt = [kw["prompt"] for texts, kw in calls if set(texts) == set(data.queries)][0]
    doc_prompt = [kw["prompt"] for texts, kw in calls if set(texts) == set(data.corpus)][0]
    assert query_prompt == model.config.prompts["query"] and doc_prompt == ""
    assert all(kw["layers"] == 2 and kw["dim"] == 16 and kw["rank"] == 16 for _, kw in calls)
    queries = model.encode(data.queries, layers=2, dim=16, rank=16, prompt=query_prompt)
    corpus = model.encode(data.corpus, layers=2, dim=16, rank=16, prompt=doc_prompt)
    ours = retrieval_metrics(queries @ corpus.T, data.relevant)
    for name in ("ndcg_at_10", "mrr_at_10", "recall_at_1", "recall_at_10"):
        assert scores[name] == pytest.approx(ours[name], abs=1e-4)  # mteb rounds to 5 decimals
    assert retrieval.get_score() == scores["ndcg_at_10"]


def test_mteb_sts_scores_and_meta(mteb_results):
    sts = next(r for r in mteb_results["results"].task_results if r.task_name == "TinySTS")
    score = sts.get_score()
    assert -1.0 <= score <= 1.0 and not math.isnan(score)
    sts_calls = [kw["prompt"] for texts, kw in mteb_results["calls"] if "a cat sits" in texts or "it rains" in texts]
    assert sts_calls and all(p == "Instruct: Retrieve semantically similar text\nQuery: " for p in sts_calls)
    meta = mteb_results["encoder"].mteb_model_meta
    assert meta.embed_dim == 16 and meta.experiment_kwargs == {"layers": 2, "dim": 16, "rank": 16}
    assert meta.n_parameters == mteb_results["model"].num_parameters(layers=2, rank=16)
    assert meta.n_embedding_parameters == 16 * (VOCAB + HIDDEN)


def test_mteb_wrapper_and_tasks_validate():
    pytest.importorskip("mteb")
    from mlembed.eval.mteb_wrapper import MLEmbedMTEBEncoder, local_retrieval_task, local_sts_task

    with pytest.raises(ValueError, match=r"dim must be an integer in 1\.\.32"):
        MLEmbedMTEBEncoder(tiny_model("qwen3", mel_rank=HIDDEN), dim=64)
    with pytest.raises(ValueError, match=r"qrels name ids that are not in queries / corpus: \['d9'\]"):
        local_retrieval_task("T", {"q1": "a"}, {"d1": "b"}, {"q1": {"d9": 1}})
    with pytest.raises(ValueError, match="need one score per pair"):
        local_sts_task("S", [("a", "b")], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"scores must lie in \[0.0, 5.0\]"):
        local_sts_task("S", [("a", "b")], [7.0])
