"""Decoupled exits (`config.exit_modules`): a module per exit that only its own depth runs, so the full path and the
other exits stay bit-identical; stored, reloaded, checked at load, and merged by every export of that setting."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_model, tiny_tokenizer
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from configuration_mlembed import MLEmbedConfig, check_exit_modules
from modeling_mlembed import MLEmbedModel, pool_embeddings, positions_from_mask, truncate_embeddings

TEXTS = ["cat dog", "a longer text about birds and the moon", "x", "rain on the road"]
SETTINGS = [dict(layers=layers, rank=rank) for layers in (1, 2, 3, 4) for rank in (None, 8)]


def trained_modules(
    kind: str, backbone: str = "qwen3", exits=(2, 3), seed: int = 1, layer_norm: bool = False, **axes
) -> MLEmbedModel:
    """A tiny model with exit modules whose weights are moved off their identity init (as training would)."""
    model = tiny_model(backbone, exit_layers=[1, 2, 3, 4], **axes)
    model.add_exit_modules(kind, list(exits), rank=4, layer_norm=layer_norm)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.exit_modules.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=generator))
    return model


def encode_all(model: MLEmbedModel, **kwargs) -> dict[tuple, np.ndarray]:
    return {tuple(s.values()): model.encode(TEXTS, **s, **kwargs) for s in SETTINGS}


@pytest.mark.parametrize(
    "kind, backbone, layer_norm",
    [("lora", "qwen3", False), ("lora", "bert", False), ("lora", "bert", True), ("adapter", "qwen3", False)]
    + [("adapter", "bert", False)],
)
def test_modules_start_as_the_shared_path_and_change_only_their_own_exit(kind, backbone, layer_norm):
    model = tiny_model(backbone, exit_layers=[1, 2, 3, 4])
    before = encode_all(model)
    model.add_exit_modules(kind, [2, 3], rank=4, layer_norm=layer_norm)
    for setting, vectors in encode_all(model).items():  # identity at init, every setting
        np.testing.assert_array_equal(vectors, before[setting])
    with torch.no_grad():
        for param in model.exit_modules.parameters():
            param.add_(0.2 * torch.randn_like(param))
    after = encode_all(model)
    for (layers, rank), vectors in after.items():
        if layers in (2, 3):  # a trained module changes its exit, and only there
            assert not np.allclose(vectors, before[(layers, rank)], atol=1e-4)
            shared = model.encode(TEXTS, layers=layers, rank=rank, use_exit_module=False)
            np.testing.assert_array_equal(shared, before[(layers, rank)])
        else:
            np.testing.assert_array_equal(vectors, before[(layers, rank)])


def lora_merged_by_hand(model: MLEmbedModel, backbone: str, module) -> MLEmbedModel:
    """A copy of `model` without exit modules whose linear weights are W + scale B A of `module`'s LoRAs."""
    reference = tiny_model(backbone, exit_layers=[1, 2, 3, 4])
    reference.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        for name, lora in module.lora.items():
            index, path = name.split("-", 1)
            linear = reference.layer_stack[int(index)].get_submodule(path.replace("-", "."))
            linear.weight += lora.scale * lora.B @ lora.A
    return reference


def test_lora_module_equals_its_weights_merged_by_hand():
    """Independent computation: a copy of the backbone with W + scale B A in its first 3 layers and the exit's norm
    as the final norm, run to depth 3, pooled and normalised, equals `encode(layers=3)`."""
    model = trained_modules("lora").eval()
    module = model.exit_module(3)
    reference = lora_merged_by_hand(model, "qwen3", module)
    with torch.no_grad():
        reference.backbone.norm.weight.copy_(module.norm.weight)
    expected = reference.encode(TEXTS, layers=3)
    np.testing.assert_allclose(model.encode(TEXTS, layers=3), expected, atol=1e-6)


def test_bert_exit_with_its_own_layer_norm_equals_its_weights_merged_by_hand():
    """Independent computation for a post-LN backbone: a copy of the BERT backbone with W + scale B A in its first 3
    layers and the exit's own copy of layer 3's output LayerNorm in place of the shared one, run to depth 3, equals
    `encode(layers=3)`; the module owns that norm and the shared one is untouched."""
    model = trained_modules("lora", "bert", layer_norm=True).eval()
    module = model.exit_module(3)
    assert module.layer_norm_path == "output.LayerNorm" and model.exit_module(2).layer_norm_path == "output.LayerNorm"
    shared_norm = model.layer_stack[2].output.LayerNorm
    assert not torch.equal(module.layer_norm.weight, shared_norm.weight)  # trained off the copy it started as
    reference = lora_merged_by_hand(model, "bert", module)
    with torch.no_grad():
        reference.layer_stack[2].output.LayerNorm.weight.copy_(module.layer_norm.weight)
        reference.layer_stack[2].output.LayerNorm.bias.copy_(module.layer_norm.bias)
    np.testing.assert_allclose(model.encode(TEXTS, layers=3), reference.encode(TEXTS, layers=3), atol=1e-6)
    untouched = tiny_model("bert", exit_layers=[1, 2, 3, 4])
    untouched.load_state_dict(model.state_dict(), strict=False)
    np.testing.assert_array_equal(model.encode(TEXTS), untouched.encode(TEXTS))  # the full path keeps the shared norm


def test_training_an_exits_layer_norm_reaches_only_its_own_copy():
    model = trained_modules("lora", "bert", layer_norm=True)
    batch = model.tokenize(TEXTS, tiny_tokenizer())
    model(**batch, layers=3).embeddings.sum().backward()
    assert model.exit_module(3).layer_norm.weight.grad.abs().sum() > 0
    assert model.layer_stack[2].output.LayerNorm.weight.grad is None  # the shared norm is not on exit 3's path
    assert model.exit_module(2).layer_norm.weight.grad is None


def test_a_pass_with_a_module_returns_only_its_own_exit():
    model = trained_modules("lora")
    batch = model.tokenize(TEXTS, tiny_tokenizer())
    assert sorted(model(**batch, layers=3, exits=True).exit_embeddings) == [3]
    with pytest.raises(ValueError, match=r"exits \[1, 2\] cannot come from a pass that runs exit 3's own module"):
        model(**batch, layers=3, exits=[1, 2])
    shared = model(**batch, layers=3, exits=True, use_exit_module=False).exit_embeddings
    assert sorted(shared) == [1, 2, 3]


def test_parameter_counts_include_only_the_module_a_setting_runs():
    model = trained_modules("lora")
    own = {k: sum(p.numel() for p in m.parameters()) for k, m in model.exit_modules.items()}
    bare = tiny_model("qwen3", exit_layers=[1, 2, 3, 4])
    assert model.num_parameters() == bare.num_parameters() + own["2"] + own["3"]
    assert model.num_parameters(layers=3) == bare.num_parameters(layers=3) + own["3"]
    assert model.num_parameters(layers=1) == bare.num_parameters(layers=1)
    assert model.num_parameters(layers=4, rank=8) == bare.num_parameters(layers=4, rank=8)


@pytest.mark.parametrize(
    "kind, backbone, layer_norm", [("lora", "qwen3", False), ("adapter", "qwen3", False)] + [("lora", "bert", True)]
)
def test_save_and_reload_keep_every_setting(kind, backbone, layer_norm, tmp_path):
    model = trained_modules(kind, backbone, layer_norm=layer_norm)
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    loaded = MLEmbedModel.from_pretrained(tmp_path).eval()
    assert loaded.config.exit_modules == model.config.exit_modules
    for setting, vectors in encode_all(model).items():
        np.testing.assert_array_equal(encode_all(loaded)[setting], vectors)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"kind": "lora", "exits": [4], "rank": 4}, r"exit_modules.exits must be .* below the last, from \[1, 2, 3\]"),
        ({"kind": "lora", "exits": [5], "rank": 4}, r"from \[1, 2, 3\], got \[5\]"),
        ({"kind": "prefix", "exits": [2], "rank": 4}, r"exit_modules.kind must be one of \['lora', 'adapter'\]"),
        ({"kind": "lora", "exits": [2], "rank": 0}, "exit_modules.rank must be an integer >= 1"),
        ({"kind": "lora", "exits": [2], "rank": 4, "alpha": 0}, "exit_modules.alpha must be a number > 0"),
        ({"kind": "lora", "exits": [2], "rank": 4, "norm": True}, r"unknown key\(s\) \['norm'\]; allowed"),
        ({"kind": "lora", "exits": [2], "rank": 4, "layer_norm": 1}, "exit_modules.layer_norm must be true or false"),
        (
            {"kind": "adapter", "exits": [2], "rank": 4, "layer_norm": True},
            "exit_modules.layer_norm is for kind 'lora' only",
        ),
        ([2, 3], "exit_modules must be a dict with keys"),
    ],
)
def test_bad_exit_module_specs_name_what_is_allowed(spec, message):
    with pytest.raises(ValueError, match=message):
        check_exit_modules(spec, [1, 2, 3, 4])
    with pytest.raises(ValueError, match=message):
        tiny_model("qwen3", exit_layers=[1, 2, 3, 4], exit_modules=spec)


def test_an_exit_layer_norm_on_a_backbone_with_a_final_norm_is_an_error():
    spec = {"kind": "lora", "exits": [2], "rank": 4, "layer_norm": True}
    with pytest.raises(
        ValueError, match=r"layer_norm is for post-LN backbones .* this qwen3 backbone has one \(norm\)"
    ):
        tiny_model("qwen3", exit_layers=[1, 2, 3, 4], exit_modules=spec)
    tiny_model("bert", exit_layers=[1, 2, 3, 4], exit_modules=spec)  # BERT (post-LN) has none: its exits own one


def test_add_exit_modules_twice_is_an_error():
    model = trained_modules("lora")
    with pytest.raises(ValueError, match="this model has exit modules already"):
        model.add_exit_modules("lora", [1], rank=2)


def _saved(tmp_path, kind="lora"):
    model = trained_modules(kind)
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    return tmp_path / "model.safetensors", tmp_path / "config.json"


def test_weights_missing_an_exit_the_config_declares_fail_at_load(tmp_path):
    weights, config = _saved(tmp_path)
    state = {k: v for k, v in load_file(weights).items() if not k.startswith("exit_modules.3.")}
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"declares a 'lora' module for exit 3, but the weights lack its tensor"):
        MLEmbedModel.from_pretrained(tmp_path)


def test_weights_of_undeclared_exits_fail_at_load(tmp_path):
    _, config = _saved(tmp_path)
    raw = json.loads(config.read_text())
    raw["exit_modules"]["exits"] = [2]
    config.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"hold exit modules for exits \[3\], which the config's exit_modules"):
        MLEmbedModel.from_pretrained(tmp_path)


def test_a_module_whose_shapes_do_not_fit_the_backbone_fails_at_load(tmp_path):
    weights, _ = _saved(tmp_path)
    state = load_file(weights)
    key = next(k for k in state if k.startswith("exit_modules.2.lora.") and k.endswith(".A"))
    rank, width = state[key].shape
    state[key] = torch.zeros(rank, width + 3)
    save_file(state, weights, metadata={"format": "pt"})
    shape = rf"\({rank}, {width + 3}\) in the weights, the model needs \({rank}, {width}\)"
    with pytest.raises(ValueError, match=rf"exit 2's module does not fit this backbone: {key} has shape {shape}"):
        MLEmbedModel.from_pretrained(tmp_path)


def _stock_vectors(folder, texts, decoder: bool) -> torch.Tensor:
    """What an engine computes from a plain export with stock code: tokenizer.json, AutoModel, pooling, normalise."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    stock = AutoModel.from_pretrained(folder).eval()
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    mode = "last_token" if pooling.get("pooling_mode_lasttoken") else "mean"
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    kwargs = {"position_ids": positions_from_mask(batch["attention_mask"])} if decoder else {}
    with torch.no_grad():
        hidden = stock(**batch, **kwargs).last_hidden_state
    return truncate_embeddings(pool_embeddings(hidden, batch["attention_mask"], mode), hidden.shape[-1])


@pytest.mark.parametrize("backbone, layer_norm", [("qwen3", False), ("bert", False), ("bert", True)])
def test_setting_exports_merge_the_module_into_a_stock_model(backbone, layer_norm, tmp_path):
    """`export --mode slim --layers 3 --compat` (and compat) of a model with a LoRA exit: a stock folder whose vectors
    equal `encode(layers=3)`; a slim ML-Embed folder at that setting, too."""
    from mlembed.export.compat import export_compat
    from mlembed.export.slim import export_slim

    model = trained_modules("lora", backbone, layer_norm=layer_norm)
    src = tmp_path / "src"
    model.save_pretrained(src)
    tiny_tokenizer().save_pretrained(src)
    expected = model.eval().encode(TEXTS, layers=3, rank=8)
    export_compat(src, tmp_path / "compat", layers=3, rank=8)
    got = _stock_vectors(tmp_path / "compat", TEXTS, decoder=backbone == "qwen3")
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    export_slim(src, tmp_path / "slim", layers=3, rank=8)
    slim = MLEmbedModel.from_pretrained(tmp_path / "slim").eval()
    assert slim.config.exit_modules is None  # exit 3's module is merged; exit 2's was trained on the unmerged body
    np.testing.assert_allclose(slim.encode(TEXTS), expected, atol=1e-5)
    export_slim(src, tmp_path / "slim-full")  # no cut: the modules travel unmerged
    assert MLEmbedModel.from_pretrained(tmp_path / "slim-full").config.exit_modules == model.config.exit_modules


def test_adapter_exits_cannot_be_merged_into_a_stock_export(tmp_path):
    from mlembed.export.compat import export_compat

    model = trained_modules("adapter")
    model.save_pretrained(tmp_path / "src")
    tiny_tokenizer().save_pretrained(tmp_path / "src")
    with pytest.raises(ValueError, match=r"exit 3 has an 'adapter' module, which no stock backbone can hold"):
        export_compat(tmp_path / "src", tmp_path / "out", layers=3)
    export_compat(tmp_path / "src", tmp_path / "out1", layers=1)  # an exit without a module exports as before


def test_config_records_the_modules_and_round_trips():
    config = MLEmbedConfig.from_backbone(
        tiny_model("bert").config.backbone_config(),
        exit_layers=[1, 2, 4],
        exit_modules={"kind": "lora", "exits": [2, 1], "rank": 8},
    )
    assert config.exit_modules == {"kind": "lora", "exits": [1, 2], "rank": 8, "alpha": 16.0}
    assert MLEmbedConfig.from_dict(config.to_dict()).exit_modules == config.exit_modules
    assert "exit_modules" not in config.backbone_config().to_dict()


def test_hub_folder_keeps_the_modules_beside_the_stock_weights(tmp_path):
    """The Hub folder: stock code reads the full path (no exit tensors in model.safetensors); the elastic model reads
    `exit_modules.safetensors` and gives every setting of the source."""
    from mlembed.export.hub import export_hub

    model = trained_modules("lora")
    model.save_pretrained(tmp_path / "src")
    tiny_tokenizer().save_pretrained(tmp_path / "src")
    export_hub(tmp_path / "src", tmp_path / "hub")
    assert not any(k.startswith("exit_modules.") for k in load_file(tmp_path / "hub" / "model.safetensors"))
    assert (tmp_path / "hub" / "exit_modules.safetensors").is_file()
    loaded = MLEmbedModel.from_pretrained(tmp_path / "hub").eval()
    expected = encode_all(model)
    for setting, vectors in encode_all(loaded).items():
        np.testing.assert_allclose(vectors, expected[setting], atol=1e-6)
    (tmp_path / "hub" / "exit_modules.safetensors").unlink()
    with pytest.raises(ValueError, match="declares a 'lora' module for exit 2, but the weights lack its tensor"):
        MLEmbedModel.from_pretrained(tmp_path / "hub")


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["qwen3", "bert"])
def test_onnx_export_of_a_module_exit_gives_its_vectors(backbone, tmp_path):
    """The ONNX graph of layers=3 holds exit 3's module merged (dynamo graph for Qwen3, fused BERT graph)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from mlembed.serving import OnnxEmbedder, export_onnx

    model = trained_modules("lora", backbone)
    model.save_pretrained(tmp_path / "src")
    tiny_tokenizer().save_pretrained(tmp_path / "src")
    export_onnx(tmp_path / "src", tmp_path / "onnx", layers=3, rank=8, dim=16, max_seq_length=64)
    got = OnnxEmbedder(tmp_path / "onnx").encode(TEXTS, batch_size=4)
    expected = model.eval().encode(TEXTS, layers=3, rank=8, dim=16, max_length=64)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert not np.allclose(got, model.encode(TEXTS, layers=3, rank=8, dim=16, use_exit_module=False), atol=1e-3)


def test_the_model_card_says_which_exits_have_modules():
    from mlembed.export.cards import render_card

    plain = str(render_card(tiny_model("qwen3", exit_layers=[1, 2, 3, 4]).config))
    assert "| Exit modules | none: every exit runs the shared layers |" in plain
    card = str(render_card(trained_modules("lora").config))
    lora = "| Exit modules | exits 2, 3: LoRA rank 4 on the layers up to the exit, and the exit's own copy of"
    assert f"{lora} the final norm, where the backbone has one" in card
    card = str(render_card(trained_modules("lora", "bert", layer_norm=True).config))
    assert f"{lora} the last norm of the exit's layer" in card


def test_add_mel_keeps_the_trained_exit_modules():
    from mlembed.export.convert import add_mel

    dense = tiny_model("qwen3", mel_rank=None, exit_layers=[1, 2, 3, 4])
    dense.add_exit_modules("lora", [2], rank=4)
    with torch.no_grad():
        for param in dense.exit_modules.parameters():
            param.add_(0.2 * torch.randn_like(param))
    factorised = add_mel(dense, 32).eval()  # full rank: the vectors stay
    factorised.tokenizer = dense.tokenizer
    np.testing.assert_allclose(factorised.encode(TEXTS, layers=2), dense.eval().encode(TEXTS, layers=2), atol=1e-5)


@pytest.mark.parametrize("backbone, layer_norm", [("qwen3", False), ("bert", False), ("bert", True)])
def test_lora_inference_on_merged_weights_equals_the_training_form_and_gives_the_weights_back(backbone, layer_norm):
    """Without gradients a LoRA exit runs on W + delta (one matmul per layer); with them, W x + delta(x) (LoRA's
    training form). Both give the same vectors, and afterwards every shared weight is its own object again, also
    when the pass fails."""
    model = trained_modules("lora", backbone, layer_norm=layer_norm).eval()
    batch = tiny_tokenizer()(TEXTS, padding=True, return_tensors="pt")
    weights = {name: param for name, param in model.named_parameters()}
    with torch.no_grad():
        merged = model(**batch, layers=3).embeddings
    with torch.enable_grad():
        training_form = model(**batch, layers=3).embeddings.detach()
    torch.testing.assert_close(merged, training_form, rtol=1e-5, atol=1e-6)
    assert all(param is weights[name] for name, param in model.named_parameters())
    with torch.no_grad(), pytest.raises(RuntimeError):  # fails inside the backbone, the merged weights in place
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"][:, :2], layers=3)
    assert all(param is weights[name] for name, param in model.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(model(**batch, layers=3).embeddings, merged, rtol=0, atol=0)


# ------------------------------------------------------------------------------ a module of its own for small ranks
SMALL = {"up_to": 8, "rank": 2}


def small_rank_modules(backbone: str = "qwen3", seed: int = 1) -> MLEmbedModel:
    """A tiny model (MEL ranks 8 / 16 / 32) whose exits 2 and 3 own a module, and a second one for MEL rank 8,
    every weight moved off its identity init."""
    model = tiny_model(backbone, exit_layers=[1, 2, 3, 4], mel_ranks=[8, 16, 32])
    model.add_exit_modules("lora", [2, 3], rank=4, small_ranks=SMALL)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.exit_modules.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=generator))
    return model.eval()


def merged_by_hand(model: MLEmbedModel, backbone: str, module) -> MLEmbedModel:
    """`lora_merged_by_hand` plus the module's own final norm (backbones that have one)."""
    reference = lora_merged_by_hand(model, backbone, module)
    if module.norm is not None:
        with torch.no_grad():
            reference.backbone.norm.weight.copy_(module.norm.weight)
    return reference.eval()


@pytest.mark.parametrize("backbone", ["qwen3", "bert"])
def test_small_ranks_run_their_own_module_and_every_other_setting_its_own(backbone):
    """Independent computation: at layers=3, MEL rank 8 equals the backbone with the small module's LoRA merged by
    hand, ranks 16 and 32 the one with the other module's; the full path and the exits without modules are the
    shared weights'. Identity at init, like every module."""
    bare = tiny_model(backbone, exit_layers=[1, 2, 3, 4], mel_ranks=[8, 16, 32])
    before = {(layers, rank): bare.encode(TEXTS, layers=layers, rank=rank) for layers, rank in [(3, 8), (3, 16)]}
    bare.add_exit_modules("lora", [2, 3], rank=4, small_ranks=SMALL)
    for (layers, rank), vectors in before.items():
        np.testing.assert_array_equal(bare.encode(TEXTS, layers=layers, rank=rank), vectors)
    model = small_rank_modules(backbone)
    module = model.exit_modules["3"]
    assert model.exit_module(3, 8) is module.small and model.exit_module(3, 16) is module
    assert model.exit_module(3) is module and model.exit_module(4, 8) is None
    small, large = merged_by_hand(model, backbone, module.small), merged_by_hand(model, backbone, module)
    np.testing.assert_allclose(model.encode(TEXTS, layers=3, rank=8), small.encode(TEXTS, layers=3, rank=8), atol=1e-6)
    for rank in (16, None):
        got = model.encode(TEXTS, layers=3, rank=rank)
        np.testing.assert_allclose(got, large.encode(TEXTS, layers=3, rank=rank), atol=1e-6)
    assert not np.allclose(small.encode(TEXTS, layers=3, rank=8), large.encode(TEXTS, layers=3, rank=8), atol=1e-4)
    shared = tiny_model(backbone, exit_layers=[1, 2, 3, 4], mel_ranks=[8, 16, 32])
    shared.load_state_dict(model.state_dict(), strict=False)
    for layers, rank in [(4, 8), (4, None), (1, 8)]:
        got = model.encode(TEXTS, layers=layers, rank=rank)
        np.testing.assert_array_equal(got, shared.encode(TEXTS, layers=layers, rank=rank))


def test_training_at_a_small_rank_reaches_only_the_small_ranks_module():
    model = small_rank_modules().train()
    batch = model.tokenize(TEXTS, tiny_tokenizer())
    for rank, trained, untouched in [(8, "small.", None), (16, None, "small.")]:
        model.zero_grad(set_to_none=True)
        model(**batch, layers=3, rank=rank).embeddings.sum().backward()
        grads = {name: p.grad for name, p in model.exit_modules["3"].named_parameters()}
        for name, grad in grads.items():
            runs = name.startswith("small.") == (trained == "small.")
            assert (grad is not None and grad.abs().sum() > 0) == runs, (rank, name)
        assert untouched is None or all(g is None for n, g in grads.items() if n.startswith(untouched))


def test_parameter_counts_include_only_the_module_a_rank_runs():
    model = small_rank_modules()
    module = model.exit_modules["3"]
    small = sum(p.numel() for p in module.small.parameters())
    large = sum(p.numel() for p in module.parameters()) - small
    assert large == sum(p.numel() for p in module.own_parameters())
    bare = tiny_model("qwen3", exit_layers=[1, 2, 3, 4], mel_ranks=[8, 16, 32])
    assert model.num_parameters(layers=3) == bare.num_parameters(layers=3) + large
    assert model.num_parameters(layers=3, rank=8) == bare.num_parameters(layers=3, rank=8) + small
    assert model.num_parameters(layers=4, rank=8) == bare.num_parameters(layers=4, rank=8)


def test_small_ranks_modules_save_reload_and_merge_into_every_export_of_their_setting(tmp_path):
    """Saved and reloaded, every setting stays; the stock (compat) export of (3, 8) merges the small ranks' module
    and that of (3, 16) the other; a slim export keeps only the ranks its merged module serves."""
    from mlembed.export.compat import export_compat
    from mlembed.export.slim import export_slim

    model = small_rank_modules("bert")
    src = tmp_path / "src"
    model.save_pretrained(src)
    tiny_tokenizer().save_pretrained(src)
    loaded = MLEmbedModel.from_pretrained(src).eval()
    assert loaded.config.exit_modules["small_ranks"] == {"up_to": 8, "rank": 2, "alpha": 4.0}
    for layers, rank in [(3, 8), (3, 16), (2, 8), (4, 8)]:
        got = loaded.encode(TEXTS, layers=layers, rank=rank)
        np.testing.assert_array_equal(got, model.encode(TEXTS, layers=layers, rank=rank))
    for rank in (8, 16):
        export_compat(src, tmp_path / f"compat{rank}", layers=3, rank=rank)
        got = _stock_vectors(tmp_path / f"compat{rank}", TEXTS, decoder=False)
        np.testing.assert_allclose(got.numpy(), model.encode(TEXTS, layers=3, rank=rank), atol=1e-5)
    export_slim(src, tmp_path / "slim8", layers=3, rank=8)
    slim = MLEmbedModel.from_pretrained(tmp_path / "slim8").eval()
    np.testing.assert_allclose(slim.encode(TEXTS), model.encode(TEXTS, layers=3, rank=8), atol=1e-5)
    export_slim(src, tmp_path / "slim3", layers=3)  # the full rank's module merged: rank 8 is not its to serve
    slim = MLEmbedModel.from_pretrained(tmp_path / "slim3").eval()
    assert slim.config.mel_ranks == [16, 32]
    np.testing.assert_allclose(slim.encode(TEXTS, rank=16), model.encode(TEXTS, layers=3, rank=16), atol=1e-5)
    export_slim(src, tmp_path / "slim-rank8", rank=8)  # no depth cut: the small ranks' modules are the modules
    slim = MLEmbedModel.from_pretrained(tmp_path / "slim-rank8").eval()
    assert slim.config.exit_modules == {"kind": "lora", "exits": [2, 3], "rank": 2, "alpha": 4.0}
    np.testing.assert_allclose(slim.encode(TEXTS, layers=3), model.encode(TEXTS, layers=3, rank=8), atol=1e-5)
    export_slim(src, tmp_path / "slim-rank16", rank=16)  # both modules travel
    slim = MLEmbedModel.from_pretrained(tmp_path / "slim-rank16").eval()
    for rank in (8, 16):
        got = slim.encode(TEXTS, layers=3, rank=rank)
        np.testing.assert_allclose(got, model.encode(TEXTS, layers=3, rank=rank), atol=1e-5)


@pytest.mark.parametrize(
    "small, message",
    [
        ({"up_to": 32, "rank": 2}, r"small_ranks.up_to must be a trained MEL rank below the largest, from \[8, 16\]"),
        ({"up_to": 12, "rank": 2}, r"from \[8, 16\], got 12"),
        ({"up_to": 8, "rank": 0}, "exit_modules.small_ranks.rank must be an integer >= 1"),
        ({"up_to": 8, "rank": 2, "alpha": -1}, "exit_modules.small_ranks.alpha must be a number > 0"),
        ({"up_to": 8, "width": 2}, r"small_ranks must be a dict with keys \['up_to', 'rank', 'alpha'\]"),
    ],
)
def test_bad_small_ranks_name_what_is_allowed(small, message):
    spec = {"kind": "lora", "exits": [2], "rank": 4, "small_ranks": small}
    with pytest.raises(ValueError, match=message):
        tiny_model("qwen3", exit_layers=[1, 2, 3, 4], mel_ranks=[8, 16, 32], exit_modules=spec)
    with pytest.raises(ValueError, match=r"from \[\], got 8 \(this model has no factorised embedding"):
        check_exit_modules({**spec, "small_ranks": SMALL}, [1, 2, 3, 4], None)


def test_weights_missing_the_small_ranks_module_fail_at_load(tmp_path):
    model = small_rank_modules()
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    state = {k: v for k, v in load_file(weights).items() if not k.startswith("exit_modules.3.small.")}
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"module for exit 3, but the weights lack its tensor exit_modules.3.small."):
        MLEmbedModel.from_pretrained(tmp_path)


def test_the_model_card_says_which_ranks_run_a_module_of_their_own():
    from mlembed.export.cards import render_card

    card = str(render_card(small_rank_modules().config))
    assert "(at MEL ranks up to 8, a second such module of LoRA rank 2 instead)" in card


def test_parameter_counts_of_a_model_with_exit_modules_are_the_stock_backbones_and_mel_factors():
    """The card's counts (`parameter_counts`): the stock backbone (what `model.safetensors` holds) and, per MEL rank k,
    U[:, :k] and V[:k] counted from the tensors; exit modules are in neither (before: the stock total held them and
    the embedding column went negative)."""
    from mlembed.sizes import parameter_counts

    bare = parameter_counts(tiny_model("qwen3", exit_layers=[1, 2, 3, 4], mel_ranks=[8, 16, 32]).config)
    for model in (trained_modules("lora", mel_ranks=[8, 16, 32]), small_rank_modules()):
        counts = parameter_counts(model.config)
        assert counts["total"] == AutoModel.from_config(model.config.backbone_config()).num_parameters()
        for k in (8, 16, 32):
            assert counts["mel_embedding"][k] == model.mel.U[:, :k].numel() + model.mel.V[:k].numel()
        assert counts == bare
