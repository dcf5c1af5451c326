"""Conversion, export, remote code, the offline Hub cache and the CLI, on tiny random models."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import HIDDEN, ROOT, backbone_config, tiny_model, tiny_tokenizer
from transformers import AutoModel

from mlembed.cli import main as cli
from mlembed.export import compat, convert, hub
from mlembed.export.slim import export_slim

TEXTS = ["elastic embeddings", "a second, longer sentence", "x"]


def write_base(tmp_path, kind="qwen3"):
    """A stock backbone folder with a tokenizer, as a user's base model would be."""
    torch.manual_seed(0)
    base = tmp_path / f"base-{kind}"
    AutoModel.from_config(backbone_config(kind)).save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    return base


def run_python(code: str, env_extra: dict, cwd) -> str:
    env = {**os.environ, **env_extra}
    env.pop("PYTHONPATH", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.parametrize("kind", ["qwen3", "bert"])
def test_convert_writes_a_complete_folder(tmp_path, kind):
    base = write_base(tmp_path, kind)
    out = tmp_path / "ml"
    model = convert.convert_base(base, out, rank=16, exit_layers=[1, 2, 4], matryoshka_dims=[8, 16, 32])
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_mlembed.py", "modeling_mlembed.py"} <= files
    config = json.loads((out / "config.json").read_text())
    assert config["backbone_type"] == kind and config["mel_rank"] == 16
    # an elastic-only folder has no dense embedding: stock code must refuse it rather than use a random one
    assert config["model_type"] == "mlembed"
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        AutoModel.from_pretrained(out)
    assert config["auto_map"]["AutoModel"] == "modeling_mlembed.MLEmbedModel"
    stock = AutoModel.from_pretrained(base)
    u, v = convert.svd_factors(stock.get_input_embeddings().weight.detach(), 16)
    torch.testing.assert_close(model.mel.U.detach(), u)
    with pytest.raises(ValueError, match=r"mel_rank must be an integer in 1\.\.32 \(min\(vocab 99, hidden 32\)\)"):
        convert.convert_base(base, tmp_path / "bad", rank=33)


def test_remote_code_round_trip_in_a_fresh_process(tmp_path):
    base = write_base(tmp_path)
    out = tmp_path / "ml"
    model = convert.convert_base(base, out, rank=16)
    expected = model.eval().encode(TEXTS, layers=2, dim=8, rank=8, tokenizer=tiny_tokenizer())
    code = f"""
import json, numpy as np
from transformers import AutoModel
m = AutoModel.from_pretrained({str(out)!r}, trust_remote_code=True)
assert type(m).__module__.startswith("transformers_modules"), type(m).__module__
assert all(tuple(p.shape) != (99, 32) for p in m.parameters()), "dense embedding allocated"
print(json.dumps(m.encode({TEXTS!r}, layers=2, dim=8, rank=8).tolist()))
"""
    stdout = run_python(code, {"HF_MODULES_CACHE": str(tmp_path / "modules")}, cwd=tmp_path)
    got = np.array(json.loads(stdout.strip().splitlines()[-1]))
    assert abs(got - expected).max() < 1e-5


def test_offline_hub_cache_loads_by_repo_id(tmp_path):
    base = write_base(tmp_path)
    model = convert.convert_base(base, tmp_path / "ml", rank=16)
    cache = tmp_path / "hub"
    snapshot = hub.install_into_cache(tmp_path / "ml", "ml-embed/tiny", cache_dir=cache)
    assert hub.install_into_cache(tmp_path / "ml", "ml-embed/tiny", cache_dir=cache) == snapshot  # idempotent
    expected = model.eval().encode(TEXTS, tokenizer=tiny_tokenizer())
    code = f"""
import json
from transformers import AutoModel
m = AutoModel.from_pretrained("ml-embed/tiny", trust_remote_code=True)
print(json.dumps(m.encode({TEXTS!r}).tolist()))
"""
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_MODULES_CACHE": str(tmp_path / "modules")}
    got = np.array(json.loads(run_python(code, env, cwd=tmp_path).strip().splitlines()[-1]))
    assert abs(got - expected).max() < 1e-5
    with pytest.raises(ValueError, match="org/name"):
        hub.install_into_cache(tmp_path / "ml", "tiny", cache_dir=cache)


@pytest.mark.parametrize("kind", ["qwen3", "bert"])
def test_compat_export_loads_with_stock_code_and_matches(tmp_path, kind):
    base = write_base(tmp_path, kind)
    model = convert.convert_base(base, tmp_path / "ml", rank=HIDDEN).eval()
    compat.export_compat(tmp_path / "ml", tmp_path / "compat")
    assert "auto_map" not in json.loads((tmp_path / "compat" / "config.json").read_text())
    stock = AutoModel.from_pretrained(tmp_path / "compat").eval()
    assert type(stock).__module__.startswith("transformers.models")
    batch = model.tokenize(TEXTS, tiny_tokenizer())
    with torch.no_grad():
        hidden = stock(**batch).last_hidden_state
    pooled = model.pool(hidden, batch["attention_mask"])
    expected = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    assert abs(model.encode(TEXTS, tokenizer=tiny_tokenizer()) - expected).max() < 1e-5


def test_slim_export_is_smaller_and_matches_its_setting(tmp_path):
    base = write_base(tmp_path)
    model = convert.convert_base(base, tmp_path / "ml", rank=HIDDEN).eval()
    info = export_slim(tmp_path / "ml", tmp_path / "slim", layers=2, rank=8, dim=16)
    assert info["bytes_after"] < info["bytes_before"] and 0 < info["saving"] < 1
    slim = AutoModel.from_pretrained(tmp_path / "slim", trust_remote_code=True)
    assert slim.config.num_hidden_layers == 2 and slim.config.mel_rank == 8 and slim.config.default_dim == 16
    expected = model.encode(TEXTS, layers=2, rank=8, dim=16, tokenizer=tiny_tokenizer())
    assert abs(slim.encode(TEXTS) - expected).max() < 1e-5
    # --compat: a plain backbone of the first 2 layers with E = U[:, :8] V[:8]
    compat.export_compat(tmp_path / "ml", tmp_path / "slim-compat", layers=2, rank=8)
    stock = AutoModel.from_pretrained(tmp_path / "slim-compat").eval()
    assert stock.config.num_hidden_layers == 2
    batch = model.tokenize(TEXTS, tiny_tokenizer())
    with torch.no_grad():
        pooled = model.pool(stock(**batch).last_hidden_state, batch["attention_mask"])[:, :16]
    assert abs(torch.nn.functional.normalize(pooled, dim=-1).numpy() - expected).max() < 1e-5


def test_released_checkpoint_import(tmp_path):
    torch.manual_seed(0)
    release = tmp_path / "release"
    stock = AutoModel.from_config(backbone_config("qwen3"))
    u, v = torch.randn(99, 16), torch.randn(16, HIDDEN) / 4
    with torch.no_grad():
        stock.embed_tokens.weight.copy_(u @ v)
    stock.save_pretrained(release)
    tiny_tokenizer().save_pretrained(release)
    torch.save(u.bfloat16(), release / "U.pth")
    torch.save(v.bfloat16(), release / "V.pth")
    model = convert.convert_released(release, tmp_path / "ml")
    assert model.config.mel_rank == 16
    torch.testing.assert_close(model.mel.U.detach(), u.bfloat16().float())
    reloaded = AutoModel.from_pretrained(tmp_path / "ml", trust_remote_code=True)
    assert reloaded.encode(TEXTS).shape == (3, HIDDEN)


class _Exploit:
    """Unpickling this would run a shell command that leaves a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_released_import_refuses_pickled_objects(tmp_path):
    release = tmp_path / "release"
    release.mkdir()
    torch.save(_Exploit(tmp_path / "pwned"), release / "U.pth")
    torch.save(torch.zeros(16, HIDDEN), release / "V.pth")
    with pytest.raises(ValueError, match="not a plain tensor file"):
        convert.load_released_factors(release)
    assert not (tmp_path / "pwned").exists()
    torch.save({"U": torch.zeros(99, 16)}, release / "U.pth")
    with pytest.raises(ValueError, match="must hold a single 2-D tensor"):
        convert.load_released_factors(release)
    torch.save(torch.zeros(99, 16), release / "U.pth")
    (release / "V.pth").unlink()
    with pytest.raises(FileNotFoundError, match="V.pth"):
        convert.load_released_factors(release)


def test_cli_convert_encode_export(tmp_path, capsys):
    base = write_base(tmp_path)
    cli(["convert", str(base), str(tmp_path / "ml"), "--mel-rank", "16", "--exit-layers", "1,2,4"])
    cli(["encode", str(tmp_path / "ml"), "hello", "world", "--layers", "2", "--dim", "8", "--prompt", "query"])
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model = AutoModel.from_pretrained(tmp_path / "ml", trust_remote_code=True)
    expected = model.encode(["hello", "world"], layers=2, dim=8, prompt_name="query")
    assert abs(np.array(rows) - expected).max() < 1e-5
    cli(["encode", str(tmp_path / "ml"), "hello", "-o", str(tmp_path / "e.npy")])
    assert np.load(tmp_path / "e.npy").shape == (1, HIDDEN)
    cli(["export", str(tmp_path / "ml"), str(tmp_path / "slim"), "--mode", "slim", "--layers", "2", "--rank", "8"])
    assert "smaller" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli(["encode", str(tmp_path / "ml"), "hello", "--layers", "9"])
    assert exit_info.value.code == 2
    assert "layers must be an integer in 1..4" in capsys.readouterr().err


def test_cli_convert_rank_is_the_deprecated_name_of_mel_rank(tmp_path, capsys, caplog):
    """`convert --rank` (the factorisation rank) became `--mel-rank`, apart from every other command's `--rank` (the
    rank a model runs at); the old flag still works and says so."""
    base = write_base(tmp_path)
    cli(["convert", str(base), str(tmp_path / "new"), "--mel-rank", "16"])
    assert "--mel-rank" not in caplog.text
    cli(["convert", str(base), str(tmp_path / "old"), "--rank", "16"])
    assert "convert --rank is now --mel-rank" in caplog.text
    for name in ("new", "old"):
        assert json.loads((tmp_path / name / "config.json").read_text())["mel_rank"] == 16
    with pytest.raises(SystemExit):
        cli(["convert", str(base), str(tmp_path / "both"), "--rank", "16", "--mel-rank", "8"])
    assert "--rank 16 and --mel-rank 8 differ; give --mel-rank only" in capsys.readouterr().err


def test_package_imports_without_training_dependencies():
    code = """
import sys
import mlembed, mlembed.export.convert, mlembed.export.hub, mlembed.cli
heavy = [m for m in ("sentence_transformers", "datasets", "mteb", "pandas", "matplotlib") if m in sys.modules]
assert not heavy, heavy
"""
    run_python(code, {}, cwd=ROOT)


def test_tiny_model_fixture_is_deterministic():
    a, b = tiny_model(seed=3), tiny_model(seed=3)
    assert abs(a.encode(TEXTS) - b.encode(TEXTS)).max() == 0


def test_every_export_records_max_seq_length(tmp_path, capsys):
    """compat, slim and hub folders carry the source's length (or --max-seq-length), never above the positions."""
    model = tiny_model("bert", max_seq_length=24)
    convert.save_folder(model, tmp_path / "ml", model.tokenizer)
    compat.export_compat(tmp_path / "ml", tmp_path / "compat")
    assert json.loads((tmp_path / "compat" / "config.json").read_text())["max_seq_length"] == 24
    assert json.loads((tmp_path / "compat" / "tokenizer_config.json").read_text())["model_max_length"] == 24
    cli(
        [
            "export",
            str(tmp_path / "ml"),
            str(tmp_path / "slim"),
            "--mode",
            "slim",
            "--layers",
            "2",
            "--max-seq-length",
            "40",
        ]
    )
    assert json.loads((tmp_path / "slim" / "config.json").read_text())["max_seq_length"] == 40
    hub.export_hub(tmp_path / "ml", tmp_path / "hub")
    assert json.loads((tmp_path / "hub" / "sentence_bert_config.json").read_text())["max_seq_length"] == 24
    assert json.loads((tmp_path / "hub" / "config.json").read_text())["max_seq_length"] == 24
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli(["export", str(tmp_path / "ml"), str(tmp_path / "x"), "--mode", "compat", "--max-seq-length", "999"])
    assert "max_seq_length must be an integer in 2..128" in capsys.readouterr().err


def test_add_mel_factorises_a_dense_model_and_keeps_its_settings():
    dense = tiny_model("bert", mel_rank=None, exit_layers=[1, 2, 4], matryoshka_dims=[8, 16, 32])
    dense.config.prompts = {"query": "query: "}
    elastic = convert.add_mel(dense, HIDDEN).eval()
    assert elastic.config.mel_rank == HIDDEN and elastic.config.mel_ranks[-1] == HIDDEN
    for key in ("exit_layers", "matryoshka_dims", "pooling", "prompts", "backbone_type", "append_eos"):
        assert getattr(elastic.config, key) == getattr(dense.config, key), key
    elastic.tokenizer = dense.tokenizer
    for layers, dim in ((None, None), (2, 16)):  # full rank = the dense embedding (SVD, exact up to fp32)
        want = dense.encode(TEXTS, layers=layers, dim=dim, prompt_name="query")
        got = elastic.encode(TEXTS, layers=layers, dim=dim, prompt_name="query")
        np.testing.assert_allclose(got, want, atol=1e-5)
    low = elastic.encode(TEXTS, rank=8)  # a lower rank is a real cut
    assert np.abs(low - dense.encode(TEXTS)).max() > 1e-2
    with pytest.raises(ValueError, match="already has MEL factors"):
        convert.add_mel(elastic, 16)
