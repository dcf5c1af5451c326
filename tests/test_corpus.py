"""encode-corpus: every input format, full width stored once (prefixes cut later), int8 / binary round trips,
resumption after a kill, bad input refused without losing what was written, and the Ray engine's files equal the
local engine's (one local Ray instance with 2 workers for the module)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, WORDS, tiny_model

from mlembed.cli import main
from mlembed.corpus import PROBE_TEXT, dequantize, encode_corpus, read_corpus, read_manifest

pytest.importorskip("pyarrow")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, 6))) for _ in range(n)]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("m")
    model = tiny_model()
    model.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("other")
    model = tiny_model(seed=1)
    model.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    docs = texts(45)
    path = tmp_path_factory.mktemp("in") / "docs.jsonl"
    return write_jsonl(path, [{"id": f"d{i}", "text": t} for i, t in enumerate(docs)]), docs


def digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def load_model(path):
    from modeling_mlembed import MLEmbedModel

    return MLEmbedModel.from_pretrained(path).eval()


def stored(folder) -> np.ndarray:
    import pyarrow.parquet as pq

    manifest = read_manifest(folder)
    tables = [pq.read_table(folder / s["file"]) for s in manifest["shards"]]
    return np.concatenate([np.stack(t.column("embedding").to_numpy(zero_copy_only=False)) for t in tables])


# ------------------------------------------------------------------------------------------------ what is stored
def test_full_width_once_and_every_prefix_equals_the_models_dim(model_dir, corpus, tmp_path):
    path, docs = corpus
    manifest = encode_corpus(model_dir, path, tmp_path / "o", layers=2, rank=16, shard_size=20)
    assert [s["rows"] for s in manifest["shards"]] == [20, 20, 5] and manifest["complete"]
    assert manifest["setting"] == {"layers": 2, "rank": 16, "prompt_name": "document", "max_length": 512}
    model = load_model(model_dir)
    for dim in (32, 8):
        ids, vectors = next(read_corpus(tmp_path / "o", dim=dim))
        expected = model.encode(docs, layers=2, rank=16, dim=dim, prompt_name="document")  # independent
        assert ids == [f"d{i}" for i in range(20)]
        np.testing.assert_allclose(vectors, expected[:20], atol=1e-5)
    probe = model.encode([PROBE_TEXT], layers=2, rank=16, prompt_name="document")[0]
    np.testing.assert_allclose(manifest["fingerprint"], probe, atol=1e-5)


def test_jsonl_parquet_and_saved_dataset_give_the_same_shards(model_dir, corpus, tmp_path):
    import pandas as pd
    from datasets import Dataset

    path, docs = corpus
    frame = pd.DataFrame({"doc": [f"d{i}" for i in range(len(docs))], "body": docs})
    (tmp_path / "pq").mkdir()
    frame.iloc[:30].to_parquet(tmp_path / "pq" / "a.parquet", row_group_size=7)  # shards straddle groups and files
    frame.iloc[30:].to_parquet(tmp_path / "pq" / "b.parquet", row_group_size=7)
    Dataset.from_pandas(frame).save_to_disk(str(tmp_path / "hf"))
    jsonl = write_jsonl(tmp_path / "x.jsonl", [{"doc": d, "body": t} for d, t in zip(frame.doc, frame.body)])
    outputs = []
    for name, source in (("j", jsonl), ("p", tmp_path / "pq"), ("h", tmp_path / "hf")):
        encode_corpus(model_dir, source, tmp_path / name, id_column="doc", text_column="body", shard_size=16)
        outputs.append({k: v for k, v in digest(tmp_path / name).items() if k != "manifest.json"})
    assert outputs[0] == outputs[1] == outputs[2] and len(outputs[0]) == 3


def test_int8_uses_calibration_ranges_from_the_manifest(model_dir, corpus, tmp_path):
    path, docs = corpus
    manifest = encode_corpus(model_dir, path, tmp_path / "o", precision="int8", shard_size=20, calibration_size=100)
    full = load_model(model_dir).encode(docs, prompt_name="document")
    ranges = np.asarray(manifest["int8_ranges"])  # a sample of 100 >= 45 rows: every row, so min / max of all
    np.testing.assert_allclose(ranges, np.vstack((full.min(0), full.max(0))), atol=1e-6)
    codes = stored(tmp_path / "o")
    assert codes.dtype == np.int8
    step = (ranges[1] - ranges[0]) / 255
    assert np.all(np.abs(dequantize(codes, "int8", 32, ranges) - full) <= step / 2 + 1e-6)  # within half a bucket
    vectors = np.concatenate([v for _, v in read_corpus(tmp_path / "o")])
    assert np.min(np.sum(vectors * full, axis=1)) > 0.99  # cosine of the dequantized vectors


def test_binary_and_float16_round_trips(model_dir, corpus, tmp_path):
    path, docs = corpus
    full = load_model(model_dir).encode(docs, prompt_name="document")
    encode_corpus(model_dir, path, tmp_path / "b", precision="binary", shard_size=20)
    codes = stored(tmp_path / "b")
    assert codes.shape == (45, 4) and codes.dtype == np.int8  # 32 dims -> 4 bytes
    np.testing.assert_array_equal(dequantize(codes, "binary", 32), np.where(full > 0, 1.0, -1.0))
    _, prefix16 = next(read_corpus(tmp_path / "b", dim=16))
    np.testing.assert_allclose(prefix16, np.where(full[:20, :16] > 0, 1, -1) / 4.0, atol=1e-6)
    encode_corpus(model_dir, path, tmp_path / "h", precision="float16", shard_size=20)
    assert stored(tmp_path / "h").dtype == np.float16
    np.testing.assert_allclose(next(read_corpus(tmp_path / "h"))[1], full[:20], atol=2e-3)


# ------------------------------------------------------------------------------------------------- resumption
def test_a_killed_run_resumes_to_the_uninterrupted_result(model_dir, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts(400, seed=3))])
    argv = ["encode-corpus", model_dir, path, "--shard-size", "8", "--precision", "int8", "--device", "cpu"]
    main([*argv, "-o", str(tmp_path / "whole")])

    cmd = [sys.executable, "-m", "mlembed.cli", *argv, "-o", str(tmp_path / "killed")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    first = tmp_path / "killed" / "shard-00000.parquet"
    deadline = time.time() + 240
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = sorted(p.name for p in (tmp_path / "killed").glob("shard-*.parquet"))
    assert first.exists() and len(written) < 50, written  # really killed after its first shard, mid-way
    assert not read_manifest(tmp_path / "killed")["complete"]

    main([*argv, "-o", str(tmp_path / "killed")])  # the same command resumes
    assert digest(tmp_path / "killed") == digest(tmp_path / "whole")  # no duplicates, no holes, same bytes


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "rows, match",
    [
        ([{"id": 1, "body": "x"}], r"no column 'text' for the text \(found \['body', 'id'\]\); name it with --text"),
        ([{"id": 1, "text": "a"}, {"id": 2, "text": "  "}], r"line 2: column 'text' is empty"),
        ([{"id": 1, "text": "a"}, {"text": "b"}], r"line 2: no column 'id'"),
        ([{"id": 1, "text": "a"}, {"id": 1, "text": "b"}], r"line 2: id 1 appears twice"),
    ],
)
def test_bad_rows_are_named_before_anything_is_encoded(model_dir, tmp_path, rows, match):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ValueError, match=match):
        encode_corpus(model_dir, path, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_an_empty_parquet_text_names_its_row(model_dir, tmp_path):
    import pandas as pd

    pd.DataFrame({"id": [1, 2, 3], "text": ["a", "b", ""]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(ValueError, match=r"x.parquet: row 3: column 'text' is empty"):
        encode_corpus(model_dir, tmp_path / "x.parquet", tmp_path / "o")


def test_a_model_or_setting_that_does_not_match_loses_nothing(model_dir, other_model_dir, corpus, tmp_path):
    path, _ = corpus
    out = tmp_path / "o"
    encode_corpus(model_dir, path, out, shard_size=20)
    before = digest(out)
    with pytest.raises(ValueError, match="does not match the corpus manifest"):
        encode_corpus(other_model_dir, path, out, shard_size=20)  # a copy in another folder would pass: same probe
    with pytest.raises(ValueError, match=r"encoded with setting=.*\"layers\": 4.*asks for setting=.*\"layers\": 2"):
        encode_corpus(model_dir, path, out, shard_size=20, layers=2)
    with pytest.raises(ValueError, match="encoded with shard_size=20"):
        encode_corpus(model_dir, path, out, shard_size=10)
    assert digest(out) == before
    with pytest.raises(ValueError, match="not empty and has no manifest.json"):
        encode_corpus(model_dir, path, tmp_path)


def test_cli_prints_a_summary_and_bad_values_name_the_allowed(model_dir, corpus, tmp_path, capsys):
    path, _ = corpus
    main(["encode-corpus", model_dir, path, "-o", str(tmp_path / "o"), "--precision", "binary", "--layers", "2"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 45 and summary["precision"] == "binary" and summary["setting"]["layers"] == 2
    with pytest.raises(SystemExit):
        main(["encode-corpus", model_dir, path, str(tmp_path / "p"), "--layers", "9"])
    assert "layers must be an integer in 1..4" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_engine_with_two_workers_writes_the_local_engines_files(ray_instance, model_dir, corpus, tmp_path):
    path, _ = corpus
    common = dict(precision="int8", shard_size=10, calibration_size=30)
    encode_corpus(model_dir, path, tmp_path / "local", **common)
    encode_corpus(model_dir, path, tmp_path / "ray", engine="ray", num_workers=2, **common)
    assert digest(tmp_path / "ray") == digest(tmp_path / "local")  # shards and manifest, byte for byte
    assert len(digest(tmp_path / "ray")) == 6
