"""Training data layer: parquet format and validation, one-dataset-per-step sampler, collator."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_tokenizer

from mlembed.data import (
    MLEmbedCollator,
    OneDatasetBatchSampler,
    TrainingCorpus,
    as_training_corpus,
    from_hf_dataset,
    infer_dataset_type,
    load_parquet_corpus,
)
from modeling_mlembed import tokenize_with_eos

RETRIEVAL_PROMPT = "Instruct: Given a question, retrieve passages that can help answer the question\nQuery: "


def frame(n: int, negatives: int, prefix: str = "") -> pd.DataFrame:
    """n rows with distinct texts; negative j of row i is f"{prefix}n{i}_{j}"."""
    data = {"query": [f"{prefix}q{i}" for i in range(n)], "passage": [f"{prefix}p{i}" for i in range(n)]}
    for j in range(1, negatives + 1):
        data[f"negative_{j}"] = [f"{prefix}n{i}_{j}" for i in range(n)]
    return pd.DataFrame(data)


def write(tmp_path, name: str, df: pd.DataFrame):
    path = tmp_path / f"{name}.parquet"
    df.to_parquet(path, index=False)
    return path


# ------------------------------------------------------------------------------------------------ format
@pytest.mark.parametrize(
    "name, expected",
    [
        ("msmarco", "retrieval"),
        ("arxiv_clustering_s2s", "clustering"),
        ("Amazon-Classification", "classification"),
        ("nli", "retrieval"),
    ],
)
def test_infer_dataset_type(name, expected):
    assert infer_dataset_type(name) == expected


def test_folder_loads_rows_types_prompts_and_negative_counts(tmp_path):
    write(tmp_path, "msmarco", frame(5, 24, "r"))
    write(tmp_path, "reddit_clustering", frame(4, 12, "c"))
    write(tmp_path, "imdb_classification", frame(3, 1, "k"))
    corpus = load_parquet_corpus(tmp_path, instructions={"reddit_clustering": "Identify the topic"})
    by_name = {d.name: d for d in corpus.datasets}
    assert [d.name for d in corpus.datasets] == ["imdb_classification", "msmarco", "reddit_clustering"]  # sorted
    assert {n: (d.type, d.num_negatives) for n, d in by_name.items()} == {
        "msmarco": ("retrieval", 7),
        "reddit_clustering": ("clustering", 9),
        "imdb_classification": ("classification", 1),
    }
    assert corpus.dataset_lengths == [3, 5, 4] and len(corpus) == 12
    item = corpus[3]  # first row of msmarco
    assert (item["query"], item["passage"], item["dataset"], item["type"]) == ("rq0", "rp0", "msmarco", "retrieval")
    assert item["prompt"] == RETRIEVAL_PROMPT
    assert corpus[8]["prompt"] == "Instruct: Identify the topic\nQuery: "
    assert corpus[0]["prompt"] == ""  # classification without an instruction: no prompt
    # sampled negatives: distinct, from the row's own negatives
    for index, k in ((0, 1), (3, 7), (8, 9)):
        negatives = corpus[index]["negatives"]
        row = corpus.locate(index)[1]
        assert len(set(negatives)) == k and all(n.split("_")[0][1:] == f"n{row}" for n in negatives)


def test_explicit_types_num_negatives_max_rows_and_list_of_files(tmp_path):
    a = write(tmp_path, "alpha", frame(10, 4))
    b = write(tmp_path, "beta", frame(6, 4, "b"))
    corpus = load_parquet_corpus(
        [b, a], dataset_types={"alpha": "clustering"}, num_negatives={"clustering": 2, "retrieval": 3}, max_rows=5
    )
    assert [(d.name, d.type, d.num_negatives, len(d)) for d in corpus.datasets] == [
        ("beta", "retrieval", 3, 5),
        ("alpha", "clustering", 2, 5),
    ]
    assert [corpus[i]["query"] for i in range(5, 10)] == [f"q{i}" for i in range(5)]  # the first rows are kept


def test_negative_sampling_skips_nulls_is_seeded_and_uniform(tmp_path):
    df = frame(2000, 24)
    df.loc[::2, [f"negative_{j}" for j in range(9, 25)]] = None  # even rows: only negative_1..8 available
    write(tmp_path, "data", df)
    first = load_parquet_corpus(tmp_path, seed=3)
    again = load_parquet_corpus(tmp_path, seed=3)
    other = load_parquet_corpus(tmp_path, seed=4)
    rows = [first[i]["negatives"] for i in range(2000)]
    assert rows == [again[i]["negatives"] for i in range(2000)]
    assert rows != [other[i]["negatives"] for i in range(2000)]
    columns = Counter()
    for i, negatives in enumerate(rows):
        chosen = [int(n.split("_")[1]) for n in negatives]
        assert len(set(chosen)) == 7 and all(n.startswith(f"n{i}_") for n in negatives)
        if i % 2 == 0:
            assert max(chosen) <= 8
        else:
            columns.update(chosen)
    # odd rows: 7 of 24 columns, each column in 1000 * 7 / 24 = 292 rows on average (std ~ 14)
    assert all(220 < columns[j] < 365 for j in range(1, 25))


def test_hf_dataset_columns(tmp_path):
    datasets = pytest.importorskip("datasets")
    triplets = datasets.Dataset.from_dict({"anchor": ["a1", "a2"], "positive": ["p1", "p2"], "negative": ["n1", "n2"]})
    corpus = TrainingCorpus([from_hf_dataset(triplets, name="ft")])
    assert corpus[1] == {
        "query": "a2",
        "passage": "p2",
        "negatives": ["n2"],
        "dataset": "ft",
        "type": "retrieval",
        "prompt": RETRIEVAL_PROMPT,
    }
    pairs = datasets.Dataset.from_dict({"anchor": ["a1", "a2"], "positive": ["p1", "p2"]})
    assert TrainingCorpus([from_hf_dataset(pairs, instruction="")])[0]["negatives"] == []
    assert TrainingCorpus([from_hf_dataset(pairs, instruction="")])[0]["prompt"] == ""
    many = datasets.Dataset.from_pandas(frame(3, 12).rename(columns={"query": "anchor", "passage": "positive"}))
    assert len(as_training_corpus(many)[2]["negatives"]) == 7
    assert len(TrainingCorpus([from_hf_dataset(many, dataset_type="classification")])[0]["negatives"]) == 1
    with pytest.raises(ValueError, match=r"needs exactly one of the columns \['anchor', 'query'\], found \['text'"):
        from_hf_dataset(datasets.Dataset.from_dict({"text": ["x"], "positive": ["y"]}))
    with pytest.raises(ValueError, match="either a 'negative' column or negative_1..N"):
        from_hf_dataset(
            datasets.Dataset.from_dict({"anchor": ["x"], "positive": ["y"], "negative": ["z"], "negative_1": ["w"]})
        )


def test_corpus_batched_fetch_matches_single_items(tmp_path):
    write(tmp_path, "a", frame(4, 7, "a"))
    write(tmp_path, "b", frame(3, 7, "b"))
    corpus = load_parquet_corpus(tmp_path)
    indices = [6, 0, 4, 3, -1]
    assert corpus.__getitems__(indices) == [corpus[i] for i in indices]
    assert corpus[-1]["query"] == "bq2"
    with pytest.raises(IndexError, match="index 7 out of range for a corpus of 7 rows"):
        corpus[7]


def test_error_missing_column_names_file_and_column(tmp_path):
    path = write(tmp_path, "data", frame(3, 7).drop(columns="passage"))
    with pytest.raises(ValueError, match=rf"{path}: missing column\(s\) \['passage'\]"):
        load_parquet_corpus(tmp_path)


def test_error_too_few_negative_columns(tmp_path):
    path = write(tmp_path, "data_clustering", frame(3, 7))
    with pytest.raises(ValueError, match=rf"{path}: column negative_8 missing: this dataset needs 9 negatives"):
        load_parquet_corpus(tmp_path)


@pytest.mark.parametrize(
    "value, reason", [("", "empty or missing text"), ("   ", "empty or missing text"), (None, "empty or missing text")]
)
def test_error_empty_text_names_file_row_column(tmp_path, value, reason):
    df = frame(5, 7)
    df.loc[3, "query"] = value
    df.loc[4, "passage"] = ""
    path = write(tmp_path, "data", df)
    with pytest.raises(ValueError, match=rf"{path}: row 3, column 'query': {reason} \(1 more invalid row\(s\)\)"):
        load_parquet_corpus(tmp_path)


def test_error_non_string_column(tmp_path):
    df = frame(3, 7)
    df["passage"] = [1, 2, 3]
    path = write(tmp_path, "data", df)
    with pytest.raises(ValueError, match=rf"{path}: row 0, column 'passage': texts must be strings, the column has"):
        load_parquet_corpus(tmp_path)


def test_error_empty_negative_and_too_few_negatives_in_a_row(tmp_path):
    df = frame(4, 8)
    df.loc[1, "negative_5"] = ""
    path = write(tmp_path, "data", df)
    with pytest.raises(ValueError, match=rf"{path}: row 1, column 'negative_5': empty text \(use null"):
        load_parquet_corpus(tmp_path)
    df = frame(4, 8)
    df.loc[2, ["negative_1", "negative_2"]] = None  # 6 left, retrieval needs 7
    path = write(tmp_path, "data", df)
    with pytest.raises(ValueError, match=rf"{path}: row 2, column 'negative_1..negative_8': fewer than 7 negatives"):
        load_parquet_corpus(tmp_path)


def test_skip_policy_drops_invalid_rows_and_logs_count(tmp_path, caplog):
    df = frame(6, 7)
    df.loc[1, "query"] = ""
    df.loc[4, "negative_3"] = None
    path = write(tmp_path, "data", df)
    with caplog.at_level(logging.WARNING, logger="mlembed.data.format"):
        corpus = load_parquet_corpus(tmp_path, on_invalid="skip")
    assert [corpus[i]["query"] for i in range(len(corpus))] == ["q0", "q2", "q3", "q5"]
    assert f"{path}: skipped 2 of 6 invalid rows" in caplog.text
    assert "row 1, column 'query'" in caplog.text


def test_option_errors(tmp_path):
    write(tmp_path, "data", frame(3, 7))
    with pytest.raises(ValueError, match=r"on_invalid must be one of \('error', 'skip'\), got 'drop'"):
        load_parquet_corpus(tmp_path, on_invalid="drop")
    with pytest.raises(ValueError, match=r"dataset_types names unknown datasets \['dta'\]; the datasets are"):
        load_parquet_corpus(tmp_path, dataset_types={"dta": "retrieval"})
    with pytest.raises(ValueError, match=r"instructions names unknown datasets \['x'\]"):
        load_parquet_corpus(tmp_path, instructions={"x": "y"})
    with pytest.raises(ValueError, match=r"type must be one of \('retrieval', 'clustering', 'class.*\), got 'sts'"):
        load_parquet_corpus(tmp_path, dataset_types={"data": "sts"})
    with pytest.raises(ValueError, match=r"num_negatives keys must be dataset types .*, got \['sts'\]"):
        load_parquet_corpus(tmp_path, num_negatives={"sts": 1})
    with pytest.raises(ValueError, match=r"num_negatives\['retrieval'\] must be a non-negative integer, got -1"):
        load_parquet_corpus(tmp_path, num_negatives={"retrieval": -1})
    with pytest.raises(ValueError, match="a classification dataset needs at least 1 negative per query"):
        load_parquet_corpus(tmp_path, dataset_types={"data": "classification"}, num_negatives={"classification": 0})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no parquet files found in"):
        load_parquet_corpus(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="parquet files not found"):
        load_parquet_corpus([tmp_path / "nope.parquet"])
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "data", frame(3, 7))
    with pytest.raises(ValueError, match=r"dataset names must be unique, got duplicates \['data'\]"):
        load_parquet_corpus([tmp_path / "data.parquet", tmp_path / "sub" / "data.parquet"])


# ----------------------------------------------------------------------------------------------- sampler
def dataset_of(index: int, lengths: list[int]) -> int:
    return int(np.searchsorted(np.cumsum(lengths), index, side="right"))


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_sampler_groups_one_dataset_and_uses_indices_once(world_size):
    lengths, batch_size = [50, 23, 7, 31], 4
    sampler = OneDatasetBatchSampler(lengths, batch_size, world_size=world_size, seed=1)
    batches = list(sampler)
    group = world_size * batch_size
    expected_groups = [n // group for n in lengths]
    assert len(batches) == len(sampler) == sum(expected_groups) * world_size
    assert all(len(b) == batch_size for b in batches)
    steps = [batches[s : s + world_size] for s in range(0, len(batches), world_size)]
    step_datasets = []
    for step in steps:
        owners = {dataset_of(i, lengths) for b in step for i in b}
        assert len(owners) == 1
        step_datasets.append(owners.pop())
    assert Counter(step_datasets) == {d: g for d, g in enumerate(expected_groups) if g}  # exact proportions
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))
    assert all(0 <= i < sum(lengths) for i in flat)


def test_sampler_order_is_random_in_proportion_to_groups():
    lengths = [300, 100]  # 3:1 groups of 4
    first = Counter()
    for epoch in range(400):
        sampler = OneDatasetBatchSampler(lengths, 4, seed=7)
        sampler.set_epoch(epoch)
        first[dataset_of(next(iter(sampler))[0], lengths)] += 1
    assert 0.68 < first[0] / 400 < 0.82  # expected 0.75, std 0.022


def test_sampler_determinism_epochs_and_shuffle():
    a = OneDatasetBatchSampler([40, 40], 4, world_size=2, seed=5)
    b = OneDatasetBatchSampler([40, 40], 4, world_size=2, seed=5)
    assert list(a) == list(b)
    epoch0 = list(a)
    a.set_epoch(1)
    assert list(a) != epoch0
    within = [i for batch in epoch0 for i in batch if i < 40]
    assert within != sorted(within)  # rows shuffled inside a dataset
    assert list(OneDatasetBatchSampler([40, 40], 4, world_size=2, seed=6)) != epoch0


def test_sampler_keep_last_fills_groups_and_sees_every_row():
    lengths = [10, 3]
    sampler = OneDatasetBatchSampler(lengths, 4, world_size=1, drop_last=False, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3 + 1
    assert all(len(b) == 4 for b in batches)
    assert set(i for b in batches for i in b) == set(range(13))
    assert all(len({dataset_of(i, lengths) for i in b}) == 1 for b in batches)


def test_sampler_errors(caplog):
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        OneDatasetBatchSampler([10], 0)
    with pytest.raises(ValueError, match="world_size must be a positive integer, got 0"):
        OneDatasetBatchSampler([10], 2, world_size=0)
    with pytest.raises(ValueError, match="dataset_lengths must be non-empty, of non-negative integers, got"):
        OneDatasetBatchSampler([], 2)
    with pytest.raises(ValueError, match=r"no dataset has a full group of world_size \* batch_size = 8 rows"):
        OneDatasetBatchSampler([5, 7], 4, world_size=2)
    with pytest.raises(ValueError, match=r"names must give one name per dataset \(2\), got 1"):
        OneDatasetBatchSampler([5, 8], 4, names=["only"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mlembed.data.sampler"):
        OneDatasetBatchSampler([5, 8], 4, world_size=2, names=["tiny_set", "big_set"])
    assert "dataset(s) tiny_set (5 rows) have fewer than world_size * batch_size = 8 rows" in caplog.text


def test_sampler_with_accelerate_sharding_keeps_one_dataset_per_step():
    from accelerate.data_loader import BatchSamplerShard

    lengths = [37, 64, 20]
    sampler = OneDatasetBatchSampler(lengths, 3, world_size=2, seed=2)
    shards = [list(BatchSamplerShard(sampler, num_processes=2, process_index=p)) for p in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(sampler) // 2
    for batch0, batch1 in zip(*shards):
        assert {dataset_of(i, lengths) for i in batch0} == {dataset_of(i, lengths) for i in batch1}
        assert len({dataset_of(i, lengths) for i in batch0}) == 1
    assert [b for pair in zip(*shards) for b in pair] == list(sampler)


# ---------------------------------------------------------------------------------------------- collator
def ids_of(tokenizer, text: str) -> list[int]:
    return tokenizer(text)["input_ids"]


def test_tokenize_truncates_then_appends_eos_right_padded():
    tokenizer = tiny_tokenizer()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    texts = ["x" * 50, "abc", "hello world"]
    batch = tokenize_with_eos(tokenizer, texts, max_length=8)
    assert batch["input_ids"].shape == (3, 8)
    expected = [
        ids_of(tokenizer, "x" * 7) + [eos],
        ids_of(tokenizer, "abc") + [eos] + [pad] * 4,
        ids_of(tokenizer, "hello w") + [eos],
    ]
    assert batch["input_ids"].tolist() == expected
    assert batch["attention_mask"].tolist() == [[1] * 8, [1] * 4 + [0] * 4, [1] * 8]
    plain = tokenize_with_eos(tokenizer, texts, max_length=8, append_eos=False)
    assert plain["input_ids"].tolist()[1] == ids_of(tokenizer, "abc") + [pad] * 5
    assert eos not in plain["input_ids"].tolist()[0]


def test_tokenize_errors():
    tokenizer = tiny_tokenizer()
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match="append_eos=True needs a tokenizer with an eos_token"):
        tokenize_with_eos(tokenizer, ["a"], 8)
    with pytest.raises(ValueError, match="max_length must be an integer >= 2"):
        MLEmbedCollator(tiny_tokenizer(), max_length=1)


def item(query, passage, negatives, dataset="d", kind="retrieval", prompt="P: "):
    return {
        "query": query,
        "passage": passage,
        "negatives": negatives,
        "dataset": dataset,
        "type": kind,
        "prompt": prompt,
    }


def test_collator_batch_layout():
    """One flat batch: queries (prompted), positives, then negative 1 of every query, negative 2 of every query."""
    tokenizer = tiny_tokenizer()
    eos = tokenizer.eos_token_id
    collator = MLEmbedCollator(tokenizer, max_length=32)
    items = [item(f"q{i}", f"p{i}", [f"n{i}0", f"n{i}1"]) for i in range(5)]
    batch = collator(items)
    assert batch["num_columns"] == 4 and batch["in_batch"] is True and batch["dataset"] == "d"
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape == (4 * 5, len("P: q0") + 1)

    def row(r: int) -> list[int]:
        return ids[r][mask[r].bool()].tolist()

    for i in range(5):
        assert row(i) == ids_of(tokenizer, f"P: q{i}") + [eos]
        assert row(5 + i) == ids_of(tokenizer, f"p{i}") + [eos]  # no prompt on passages
        for j in range(2):
            assert row((2 + j) * 5 + i) == ids_of(tokenizer, f"n{i}{j}") + [eos]


def test_collator_types_and_no_negatives():
    collator = MLEmbedCollator(tiny_tokenizer(), max_length=16)
    batch = collator(
        [
            item("q", "p", ["n"], kind="classification", prompt=""),
            item("r", "s", ["m"], prompt="", kind="classification"),
        ]
    )
    assert batch["in_batch"] is False and batch["num_columns"] == 3
    batch = collator([item("q", "p", []), item("r", "s", [])])
    assert batch["input_ids"].shape[0] == 4 and batch["num_columns"] == 2 and batch["in_batch"] is True


def test_collator_errors():
    collator = MLEmbedCollator(tiny_tokenizer())
    with pytest.raises(ValueError, match=r"a batch must come from one dataset, got items from \['a', 'b'\]"):
        collator([item("q", "p", ["n"], dataset="a"), item("q", "p", ["n"], dataset="b")])
    with pytest.raises(ValueError, match=r"same number of negatives, got counts \[1, 2\]"):
        collator([item("q", "p", ["n"]), item("q", "p", ["n", "m"])])
    with pytest.raises(ValueError, match="cannot collate an empty batch"):
        collator([])


def test_dataloader_end_to_end(tmp_path):
    write(tmp_path, "alpha", frame(12, 7, "a"))
    write(tmp_path, "beta_clustering", frame(9, 9, "b"))
    corpus = load_parquet_corpus(tmp_path)
    sampler = OneDatasetBatchSampler(corpus.dataset_lengths, batch_size=3, seed=0)
    loader = torch.utils.data.DataLoader(corpus, batch_sampler=sampler, collate_fn=MLEmbedCollator(tiny_tokenizer()))
    batches = list(loader)
    assert len(batches) == 4 + 3
    assert Counter(b["dataset"] for b in batches) == {"alpha": 4, "beta_clustering": 3}
    for b in batches:
        n = 7 if b["dataset"] == "alpha" else 9
        assert b["num_columns"] == 2 + n and b["input_ids"].shape[0] == 3 * (2 + n)
        assert b["in_batch"] is (b["dataset"] == "alpha")


def test_mine_negatives_over_plain_strings_skips_conflicting_groups():
    """Generic lexical mining: the closest query wins, but never a candidate sharing a group key or the passage."""
    from mlembed.data.mining import Example, mine_negatives

    pool = [Example(f"filler words number{i}", f"passage {i}") for i in range(30)]
    pool += [
        Example("rust compiler toolchain", "The Rust compiler.", frozenset({"src:rustc"})),
        Example("rust compiler documentation", "Docs of the Rust compiler.", frozenset({"src:rustc"})),
        Example("rust compiler plugin", "A plugin for the compiler.", frozenset({"src:other"})),
    ]
    row = pool[-3]
    mined = mine_negatives([row], pool, negatives=3, seed=0, depth=1)[0]
    assert mined[0] == "A plugin for the compiler."  # depth 1: only the best non-conflicting candidate is drawn
    assert "Docs of the Rust compiler." not in mined and row.passage not in mined  # same group, own passage
    assert len(set(mined)) == 3
