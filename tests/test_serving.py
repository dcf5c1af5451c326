"""Serving: the exported folders give the elastic model's vectors on the runtimes and engines people use.

* ONNX exports (`mlembed.serving.export_onnx`) against the elastic model at the same setting, which computes the
  embedding another way (factorised MEL lookup, depth view of the full backbone), for Qwen3 and BERT backbones.
* fastembed: in its own environment (`tests/personas/test_serve_user.py`; it pins huggingface_hub < 2).
* compat exports read the way engines read them: vLLM's module-type and `pooling_mode_*` matching, TEI's required
  pooling fields and max length, the Matryoshka keys, then truncate-and-normalise as vLLM / SGLang do.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_model

from mlembed.cli import main
from mlembed.export import engines
from mlembed.export.compat import export_compat
from mlembed.export.convert import load_tokenizer, save_folder

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
serving = pytest.importorskip("mlembed.serving")

SETTING = {"layers": 2, "rank": 16, "dim": 16}
MAX_LEN = 64
TEXTS = [
    "hello world",
    "a",
    "the same cat sat on the same mat, again and again, until the text is longer than the limit of 64",
    "rain",
    "sun and moon",
]
pytestmark = pytest.mark.slow  # a tiny export still takes ~20 s (torch.export + the ONNX translation)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    folders = {}
    for kind in ("qwen3", "bert"):
        model = tiny_model(kind, mel_rank=32, mel_ranks=[16, 32], seed=1)
        folders[kind] = save_folder(model, root / f"ml-{kind}", model.tokenizer)
    return root, folders


@pytest.fixture(scope="module")
def onnx_folders(sources):
    root, folders = sources
    out = {}
    for kind, src in folders.items():
        out[kind] = root / f"onnx-{kind}"
        serving.export_onnx(src, out[kind], max_seq_length=MAX_LEN, **SETTING)
    return out


def elastic(sources, kind):
    from modeling_mlembed import MLEmbedModel

    return MLEmbedModel.from_pretrained(sources[1][kind]).eval()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# ------------------------------------------------------------------------------------------------ ONNX Runtime
@pytest.mark.parametrize("kind", ["qwen3", "bert"])
def test_onnx_fp32_equals_the_elastic_model(sources, onnx_folders, kind):
    model = elastic(sources, kind)
    runner = serving.OnnxEmbedder(onnx_folders[kind])
    assert runner.setting.items() >= {**SETTING, "max_seq_length": MAX_LEN}.items()
    for texts, prompt_name in ((TEXTS, None), (TEXTS, "query"), (TEXTS[:1], None), (TEXTS[2:3], "document")):
        ref = model.encode(texts, max_length=MAX_LEN, prompt_name=prompt_name, **SETTING)
        got = runner.encode(texts, prompt_name=prompt_name, batch_size=4)  # padding inside every batch of 4
        assert got.shape == (len(texts), SETTING["dim"])
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    assert np.linalg.norm(got, axis=1) == pytest.approx(1.0, abs=1e-5)  # normalised inside the graph
    assert len(runner.tokenize(TEXTS[2:3])["input_ids"][0]) == MAX_LEN  # the long text was cut to the max length


def test_decoder_graph_reads_positions_from_the_mask(onnx_folders):
    """Left and right padding give the same vectors (as `MLEmbedModel.forward`): the graph takes any padding."""
    runner = serving.OnnxEmbedder(onnx_folders["qwen3"])
    right = runner.tokenize(TEXTS)
    lengths = right["attention_mask"].sum(1)
    left = {k: np.zeros_like(v) for k, v in right.items()}
    for i, n in enumerate(lengths):
        width = right["input_ids"].shape[1]
        left["input_ids"][i, width - n :] = right["input_ids"][i, :n]
        left["attention_mask"][i, width - n :] = 1
    run = runner.session.run
    np.testing.assert_allclose(run(None, left)[0], run(None, right)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["qwen3", "bert"])
def test_int8_is_quantised_and_close_to_fp32(onnx_folders, kind):
    import onnx

    graph = onnx.load(onnx_folders[kind] / serving.ONNX_INT8_FILE)
    assert any(node.op_type == "MatMulInteger" for node in graph.graph.node)  # int8 weights really used
    fp32 = serving.OnnxEmbedder(onnx_folders[kind]).encode(TEXTS * 4, prompt_name="query")
    int8 = serving.OnnxEmbedder(onnx_folders[kind], int8=True).encode(TEXTS * 4, prompt_name="query")
    assert not np.array_equal(int8, fp32)
    assert cosines(int8, fp32).mean() >= 0.99


@pytest.mark.parametrize("kind", ["qwen3", "bert"])
def test_int8_can_keep_the_down_projections_in_float(sources, onnx_folders, tmp_path, kind):
    """`int8_down_proj=False`: the feed-forward down-projection of every layer stays a float MatMul (its weight
    intermediate x hidden), everything else is quantised as by default."""
    import onnx

    out = tmp_path / kind
    setting = serving.export_onnx(sources[1][kind], out, max_seq_length=MAX_LEN, int8_down_proj=False, **SETTING)
    assert setting["int8_down_proj"] is False and serving.read_setting(onnx_folders[kind])["int8_down_proj"] is True
    config = elastic(sources, kind).config

    def ops(path):
        graph = onnx.load(path)
        shapes = {init.name: tuple(init.dims) for init in graph.graph.initializer}
        down = [n for n in graph.graph.node if shapes.get(n.input[1] if len(n.input) > 1 else "") == (64, 32)]
        return [n.op_type for n in graph.graph.node], [n.op_type for n in down]

    default_ops, default_down = ops(onnx_folders[kind] / serving.ONNX_INT8_FILE)
    kept_ops, kept_down = ops(out / serving.ONNX_INT8_FILE)
    assert (config.intermediate_size, config.hidden_size) == (64, 32)
    assert default_down == ["MatMulInteger"] * SETTING["layers"]  # by default they are quantised
    assert kept_down == ["MatMul"] * SETTING["layers"]
    assert kept_ops.count("MatMulInteger") == default_ops.count("MatMulInteger") - SETTING["layers"]
    fp32 = serving.OnnxEmbedder(out).encode(TEXTS * 4, prompt_name="query")
    int8 = serving.OnnxEmbedder(out, int8=True).encode(TEXTS * 4, prompt_name="query")
    assert not np.array_equal(int8, fp32) and cosines(int8, fp32).mean() >= 0.99


def with_outlier_channel(src, out, kind: str, factor: float = 500.0):
    """A copy of the source model whose first layer has one feed-forward channel `factor` times larger going into
    the down-projection (and the down-projection's column for it divided by `factor`): the massive activation a
    trained model has there, which sets the per-tensor int8 scale of that MatMul's input."""
    model = elastic(src, kind)
    layer = model.layer_stack[0]
    up, down = (
        (layer.mlp.up_proj, layer.mlp.down_proj) if kind == "qwen3" else (layer.intermediate.dense, layer.output.dense)
    )
    with torch.no_grad():
        up.weight[3] *= factor
        if up.bias is not None:
            up.bias[3] *= factor
        down.weight[:, 3] /= factor
    return save_folder(model, out, load_tokenizer(src[1][kind]))


@pytest.mark.parametrize("kind", ["qwen3", "bert"])
def test_int8_smoothing_keeps_the_function_and_tames_an_outlier_channel(sources, tmp_path, kind, caplog):
    """`calibration=texts`: the smoothed float graph computes the fp32 vectors (to 1e-5); with an outlier channel
    in the down-projection's input, the smoothed int8 graph's distance to fp32 (1 - cosine) is under half of plain
    int8's."""
    import onnx
    import onnxruntime as ort
    from transformers import AutoConfig

    src = with_outlier_channel(sources, tmp_path / "src", kind)
    out = tmp_path / "onnx"
    serving.export_onnx(src, out, max_seq_length=MAX_LEN, **SETTING)  # plain int8
    texts = TEXTS * 4
    fp32 = serving.OnnxEmbedder(out).encode(texts, prompt_name="query")
    plain = cosines(serving.OnnxEmbedder(out, int8=True).encode(texts, prompt_name="query"), fp32).mean()
    caplog.clear()
    setting = serving.quantize_onnx(out, calibration=TEXTS[::-1])
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]  # advice that cannot be followed
    assert setting["int8_smooth"] == {"alpha": serving.SMOOTH_ALPHA, "texts": len(TEXTS)}
    assert serving.read_setting(out)["int8_smooth"] == setting["int8_smooth"]
    smoothed = cosines(serving.OnnxEmbedder(out, int8=True).encode(texts, prompt_name="query"), fp32).mean()
    assert smoothed >= 0.99 and 1 - smoothed < 0.5 * (1 - plain), (plain, smoothed)  # the error at least halved

    graph = onnx.load(out / serving.ONNX_FILE)
    down = serving.down_projections(graph, AutoConfig.from_pretrained(out))
    float_graph = serving.smooth_down_projections(  # smooths in place: a graph of its own
        onnx.load(out / serving.ONNX_FILE), down, out, TEXTS, serving.SMOOTH_ALPHA
    )
    assert [n.op_type for n in float_graph.graph.node].count("Mul") == [n.op_type for n in graph.graph.node].count(
        "Mul"
    ) + SETTING["layers"]
    session = ort.InferenceSession(float_graph.SerializeToString(), providers=["CPUExecutionProvider"])
    runner = serving.OnnxEmbedder(out)
    batch = runner.tokenize(["query: " + t for t in texts])
    np.testing.assert_allclose(session.run(None, batch)[0], runner.session.run(None, batch)[0], atol=1e-5, rtol=0)
    int8_ops = {n.name: n.op_type for n in onnx.load(out / serving.ONNX_INT8_FILE).graph.node}
    assert all(int8_ops[f"{name}/smooth"] == "Mul" for name in down)


def test_int8_options_name_what_is_allowed(sources, tmp_path):
    src = sources[1]["qwen3"]
    for kwargs, message in (
        ({"calibration": []}, "calibration must be a non-empty list of texts"),
        ({"calibration": "one text"}, "calibration must be a non-empty list of texts"),
        ({"calibration": ["x"], "int8_down_proj": False}, "which int8_down_proj=False keeps in float"),
        ({"calibration": ["x"], "smooth_alpha": 0.0}, r"smooth_alpha must be in \(0, 1\], got 0.0"),
        ({"calibration": ["x"], "quantize": False}, "which quantize=False skips"),
    ):
        with pytest.raises(ValueError, match=message):
            serving.export_onnx(src, tmp_path / "x", **kwargs)
        assert not (tmp_path / "x").exists()


def test_the_onnx_folder_describes_its_setting(sources, onnx_folders):
    folder = onnx_folders["qwen3"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "qwen3" and config["num_hidden_layers"] == SETTING["layers"]
    assert config["matryoshka_dimensions"] == [8, 16] and config["is_matryoshka"] is True  # trained dims <= 16
    assert config[serving.SETTING_KEY]["rank"] == 16
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == MAX_LEN
    prompts = json.loads((folder / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts == elastic(sources, "qwen3").config.prompts
    with pytest.raises(ValueError, match="not an ML-Embed ONNX export"):
        serving.read_setting(sources[1]["qwen3"])


def _custom_ops(path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(path).graph.node if node.domain == "com.microsoft"}


def test_bert_graph_is_fused_and_gives_the_unfused_vectors(sources, onnx_folders, tmp_path):
    """BERT exports are fused by ONNX Runtime's optimizer (the speed on CPUs); the plain graph computes the same."""
    assert {"Attention", "SkipLayerNormalization"} <= _custom_ops(onnx_folders["bert"] / serving.ONNX_FILE)
    assert serving.read_setting(onnx_folders["bert"])["fused"] == "bert"
    assert not _custom_ops(onnx_folders["qwen3"] / serving.ONNX_FILE)  # no fusion for this backbone: plain graph
    assert serving.read_setting(onnx_folders["qwen3"])["fused"] is None
    plain = tmp_path / "plain"
    serving.export_onnx(sources[1]["bert"], plain, max_seq_length=MAX_LEN, quantize=False, fuse=False, **SETTING)
    assert not _custom_ops(plain / serving.ONNX_FILE)
    fused = serving.OnnxEmbedder(onnx_folders["bert"]).encode(TEXTS, prompt_name="query", batch_size=4)
    unfused = serving.OnnxEmbedder(plain).encode(TEXTS, prompt_name="query", batch_size=4)
    np.testing.assert_allclose(fused, unfused, atol=1e-5, rtol=0)


def test_fuse_names_the_backbones_it_supports(sources, tmp_path):
    with pytest.raises(ValueError, match=r"one of \['bert'\]; got 'qwen3'"):
        serving.export_onnx(sources[1]["qwen3"], tmp_path / "x", fuse=True, **SETTING)
    assert not (tmp_path / "x").exists()


def test_export_refuses_a_setting_outside_the_model_before_writing(sources, tmp_path):
    with pytest.raises(ValueError, match=r"layers must be an integer in 1\.\.4"):
        serving.export_onnx(sources[1]["qwen3"], tmp_path / "x", layers=5)
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------------------- compat exports, engines
def engine_embed(folder, texts, dimensions=None):
    """What a serving engine computes from the folder's files alone (no ML-Embed code): tokenizer.json with the
    max length of sentence_bert_config.json (TEI), the stock backbone, the pooling whose `pooling_mode_*` key is
    true (vLLM), and for `dimensions` the vLLM / SGLang rule: a listed Matryoshka dim, truncate, then normalise."""
    from tokenizers import Tokenizer
    from transformers import AutoModel

    config = json.loads((folder / "config.json").read_text())
    modules = json.loads((folder / "modules.json").read_text())
    pooling_module = next(m for m in modules if m["type"] == "sentence_transformers.models.Pooling")
    pooling = json.loads((folder / pooling_module["path"] / "config.json").read_text())
    mode = next(k for k, v in pooling.items() if v is True and k.startswith("pooling_mode_"))
    normalize = any(m["type"] == "sentence_transformers.models.Normalize" for m in modules)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])
    tokenizer.enable_padding(pad_id=config["pad_token_id"])
    encodings = tokenizer.encode_batch(list(texts))
    ids = torch.tensor([e.ids for e in encodings])
    mask = torch.tensor([e.attention_mask for e in encodings])
    with torch.no_grad():
        hidden = AutoModel.from_pretrained(folder).eval()(input_ids=ids, attention_mask=mask).last_hidden_state
    hidden, mask = hidden.numpy(), mask.numpy()
    lengths = mask.sum(1)
    if mode == "pooling_mode_lasttoken":
        pooled = hidden[np.arange(len(texts)), lengths - 1]
    elif mode == "pooling_mode_mean_tokens":
        pooled = (hidden * mask[..., None]).sum(1) / lengths[:, None]
    else:
        pooled = hidden[:, 0]
    if dimensions is not None:
        if not (config.get("is_matryoshka") or config.get("matryoshka_dimensions")):
            raise ValueError("does not support matryoshka representation")  # vLLM's 400
        if config.get("matryoshka_dimensions") and dimensions not in config["matryoshka_dimensions"]:
            raise ValueError(f"only supports {config['matryoshka_dimensions']} matryoshka dimensions")
        pooled = pooled[:, :dimensions]
        normalize = True
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True) if normalize else pooled


@pytest.mark.parametrize("kind", ["qwen3", "bert"])
def test_compat_export_carries_what_engines_read(sources, tmp_path, kind):
    model = elastic(sources, kind)
    out = export_compat(sources[1][kind], tmp_path / "compat", layers=2, rank=16, dim=16, max_seq_length=MAX_LEN)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == kind and "auto_map" not in config  # native type: stock code, TEI, vLLM
    assert config["matryoshka_dimensions"] == [8, 16] and config["is_matryoshka"] is True
    if kind == "qwen3":  # transformers 4 readers (infinity) see the same rotary base as transformers 5
        assert config["rope_theta"] == config["rope_parameters"]["rope_theta"]
    assert (out / "tokenizer.json").is_file()
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] != "TokenizersBackend"  # a name transformers 4 (infinity) loads too
    assert tokenizer_config["model_max_length"] == MAX_LEN
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"] for m in modules] == [
        "sentence_transformers.models.Transformer",
        "sentence_transformers.models.Pooling",
        "sentence_transformers.models.Normalize",
    ]
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    # TEI's PoolConfig: these two booleans are required, lasttoken optional; exactly one mode is on
    assert isinstance(pooling["pooling_mode_cls_token"], bool) and isinstance(
        pooling["pooling_mode_mean_tokens"], bool
    )
    assert [k for k, v in pooling.items() if v is True and k.startswith("pooling_mode_")] == [
        engines.POOLING_KEYS[model.config.pooling]
    ]
    assert pooling["word_embedding_dimension"] == model.config.hidden_size
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == MAX_LEN  # TEI needs it
    st_config = json.loads((out / "config_sentence_transformers.json").read_text())
    assert st_config["prompts"] == model.config.prompts and "default_prompt_name" in st_config


@pytest.mark.parametrize("kind", ["qwen3", "bert"])
def test_engine_truncate_then_normalise_equals_dim(sources, tmp_path, kind):
    model = elastic(sources, kind)
    out = export_compat(sources[1][kind], tmp_path / "compat", layers=2, rank=16, max_seq_length=MAX_LEN)
    assert json.loads((out / "config.json").read_text())["matryoshka_dimensions"] == [8, 16, 32]
    for dimensions in (8, 16, None):
        ref = model.encode(TEXTS, max_length=MAX_LEN, layers=2, rank=16, dim=dimensions)
        np.testing.assert_allclose(engine_embed(out, TEXTS, dimensions), ref, atol=1e-5, rtol=0)
    prompt = json.loads((out / "config_sentence_transformers.json").read_text())["prompts"]["query"]
    ref = model.encode(TEXTS, max_length=MAX_LEN, layers=2, rank=16, dim=16, prompt_name="query")
    np.testing.assert_allclose(engine_embed(out, [prompt + t for t in TEXTS], 16), ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="only supports"):
        engine_embed(out, TEXTS, 12)  # vLLM refuses a dim the model was not trained on


def test_sentence_transformers_loads_the_classic_files(sources, tmp_path):
    """sentence-transformers 6 reads the layout engines parse: stock modules, prompts, the max length."""
    from sentence_transformers import SentenceTransformer

    model = elastic(sources, "qwen3")
    out = export_compat(sources[1]["qwen3"], tmp_path / "compat", layers=2, rank=16, max_seq_length=MAX_LEN)
    st = SentenceTransformer(str(out), device="cpu")
    assert st.max_seq_length == MAX_LEN and st.prompts == model.config.prompts
    assert st.similarity_fn_name == "cosine"
    ref = model.encode(TEXTS, max_length=MAX_LEN, layers=2, rank=16, prompt_name="query")
    np.testing.assert_allclose(st.encode_query(TEXTS), ref, atol=1e-5, rtol=0)


def test_engine_files_name_the_allowed_values(tmp_path):
    with pytest.raises(ValueError, match=r"pooling must be one of \['cls', 'last_token', 'mean'\]"):
        engines.write_sentence_transformers_files(tmp_path, 8, "max", True, {}, 16)
    with pytest.raises(ValueError, match=r"default_prompt_name must be one of \['query'\] or None"):
        engines.write_sentence_transformers_files(tmp_path, 8, "mean", True, {"query": "q: "}, 16, "document")
    assert engines.matryoshka_keys([8, 16, 32, 64], 24) == {
        "matryoshka_dimensions": [8, 16, 24],
        "is_matryoshka": True,
    }


def test_legacy_rope_keys_spell_rope_parameters_as_transformers_4():
    llama3 = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}
    assert engines.legacy_rope_keys({"rope_parameters": llama3}) == {
        "rope_theta": 5e5,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0},
    }
    assert engines.legacy_rope_keys({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}) == {
        "rope_theta": 1e6
    }
    assert engines.legacy_rope_keys({"rope_theta": 1e4, "rope_parameters": llama3}) == {}  # never overwritten
    assert engines.legacy_rope_keys({"hidden_size": 8}) == {}  # BERT: no rotary embedding


# ------------------------------------------------------------------------------------------------ command line
def test_cli_exports_and_encodes_onnx(sources, tmp_path, capsys):
    src, out = sources[1]["qwen3"], tmp_path / "onnx"
    main(["export", str(src), str(out), "--mode", "onnx"])  # the full setting
    assert "wrote ONNX folder" in capsys.readouterr().out
    main(["encode", "--onnx", str(out), *TEXTS[:3], "--prompt", "query", "--max-length", str(MAX_LEN)])
    got = np.array(json.loads(capsys.readouterr().out))
    ref = elastic(sources, "qwen3").encode(TEXTS[:3], prompt_name="query", max_length=MAX_LEN)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    main(["encode", "--onnx", "--int8", str(out), TEXTS[0], "--dim", "32"])  # naming the baked setting is fine
    assert len(json.loads(capsys.readouterr().out)[0]) == 32
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n\n", encoding="utf-8")
    calibrated = tmp_path / "calibrated"
    main(["export", str(src), str(calibrated), "--mode", "onnx", "--layers", "2", "--calibration",
          str(tmp_path / "texts.txt"), "--smooth-alpha", "0.5"])  # fmt: skip
    assert serving.read_setting(calibrated)["int8_smooth"] == {"alpha": 0.5, "texts": len(TEXTS)}
    for argv, message in (
        (["encode", "--onnx", str(out), "x", "--layers", "2"], "this ONNX export computes layers=4, rank=32, dim=32"),
        (["encode", str(src), "x", "--int8"], "--int8 runs the int8 graph of an ONNX export; add --onnx"),
        (["export", str(src), str(tmp_path / "y"), "--mode", "onnx", "--dtype", "bfloat16"], "--dtype bfloat16"),
        (
            ["export", str(src), str(tmp_path / "y"), "--mode", "onnx", "--no-int8", "--int8-keep-down-proj"],
            "--int8-keep-down-proj shapes the int8 variant, which --no-int8 skips",
        ),
        (
            ["export", str(src), str(tmp_path / "y"), "--mode", "onnx", "--no-int8", "--calibration", "texts.txt"],
            "--calibration shapes the int8 variant, which --no-int8 skips",
        ),
        (
            ["export", str(src), str(tmp_path / "y"), "--mode", "onnx", "--smooth-alpha", "0.5"],
            "--smooth-alpha sets the smoothing of --calibration: add --calibration FILE",
        ),
    ):
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err


def test_cli_no_fuse_writes_standard_ops_only(sources, tmp_path, capsys):
    out = tmp_path / "plain"
    main(["export", str(sources[1]["bert"]), str(out), "--mode", "onnx", "--no-fuse", "--no-int8", "--layers", "2"])
    assert not _custom_ops(out / serving.ONNX_FILE) and serving.read_setting(out)["fused"] is None
    assert serving.read_setting(out)["files"] == {"fp32": serving.ONNX_FILE}
