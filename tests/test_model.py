"""The elastic model against stock transformers: parity, early exit, MEL, axis validation, padding."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import HIDDEN, LAYERS, VOCAB, backbone_config, tiny_model, tiny_tokenizer
from transformers import AutoModel

from mlembed.export.convert import from_backbone, svd_factors
from modeling_mlembed import MLEmbedModel

KINDS = ["qwen3", "llama", "bert"]


def stock_and_ours(kind: str, mel_rank: int | None = HIDDEN):
    """A random stock backbone and ML-Embed built from it (MEL at full SVD rank reproduces E)."""
    torch.manual_seed(0)
    stock = AutoModel.from_config(backbone_config(kind)).eval()
    ours = from_backbone(stock, mel_rank=mel_rank).eval()
    return stock, ours


def batch(seed: int = 0, right_pad: bool = True):
    """(3, 9) ids ending with EOS (id 1) at each row's last real token, one short row padded."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 99, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    lengths = [9, 5, 7]
    for i, n in enumerate(lengths):
        ids[i, n - 1] = 1
        ids[i, n:] = 0
        mask[i, n:] = 0
    if not right_pad:
        ids = torch.stack([torch.roll(r, 9 - n) for r, n in zip(ids, lengths)])
        mask = torch.stack([torch.roll(r, 9 - n) for r, n in zip(mask, lengths)])
    return ids, mask


def stock_pool(kind: str, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Independent pooling: mean for encoders, the last real token for decoders (right padding)."""
    if kind == "bert":
        m = mask.unsqueeze(-1).float()
        return (hidden * m).sum(1) / m.sum(1)
    return hidden[torch.arange(hidden.shape[0]), mask.sum(1) - 1]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mel_rank", [None, HIDDEN])
def test_full_setting_equals_stock_backbone(kind, mel_rank):
    stock, ours = stock_and_ours(kind, mel_rank)
    ids, mask = batch()
    with torch.no_grad():
        expected = F.normalize(stock_pool(kind, stock(input_ids=ids, attention_mask=mask).last_hidden_state, mask))
        got = ours(ids, mask).embeddings
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_every_exit_equals_stock_hidden_state_through_final_norm(kind):
    stock, ours = stock_and_ours(kind)
    ids, mask = batch()
    norm = getattr(stock, "norm", torch.nn.Identity())
    with torch.no_grad():
        states = stock(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        all_exits = ours(ids, mask, exits=list(range(1, LAYERS + 1))).exit_embeddings
        for k in range(1, LAYERS + 1):
            # hidden_states[k] for k < L is the raw layer output; the last one is already normed
            expected = stock_pool(kind, norm(states[k]) if k < LAYERS else states[k], mask)
            torch.testing.assert_close(all_exits[k], expected, atol=1e-5, rtol=0)
            torch.testing.assert_close(ours(ids, mask, layers=k).embeddings, F.normalize(expected), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_early_exit_computes_only_k_layers(kind):
    model = tiny_model(kind)
    stack = model._layer(0), model._layer(1), model._layer(2), model._layer(3)
    calls = [0] * LAYERS
    for i, layer in enumerate(stack):
        layer.register_forward_hook(lambda *_a, i=i: calls.__setitem__(i, calls[i] + 1))
    ids, mask = batch(right_pad=True)
    with torch.no_grad():
        model(ids, mask, layers=2)
    assert calls == [1, 1, 0, 0]
    with torch.no_grad():
        model(ids, mask, exits=True, layers=2)  # training exits up to depth 2 also stop there
    assert calls == [2, 2, 0, 0]


def test_depth_view_does_not_mutate_the_model():
    model = tiny_model()
    ids, mask = batch()
    with torch.no_grad():
        full = model(ids, mask).embeddings
        model(ids, mask, layers=1)
        again = model(ids, mask).embeddings
    assert model.config.num_hidden_layers == LAYERS and len(model.backbone.layers) == LAYERS
    torch.testing.assert_close(full, again, atol=0, rtol=0)


def test_depth_view_follows_layers_swapped_after_it_was_built():
    """Wrappers such as FSDP1 replace layers in place after the model exists: a cached depth view must run the new
    modules, not the ones it was first built from."""
    model = tiny_model("qwen3")
    ids = torch.randint(2, 99, (2, 6))
    before = model(input_ids=ids, layers=2).embeddings  # builds and caches the depth-2 view
    calls = []

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args, **kwargs):
            calls.append(1)
            return self.inner(*args, **kwargs)

    model.backbone.layers[1] = Wrapper(model.backbone.layers[1])
    after = model(input_ids=ids, layers=2).embeddings
    assert calls == [1]
    torch.testing.assert_close(after, before)


def test_svd_error_falls_with_rank_and_full_rank_reproduces_embedding():
    torch.manual_seed(0)
    emb = torch.randn(99, HIDDEN)
    errors = []
    for rank in (4, 8, 16, 32):
        u, v = svd_factors(emb, rank)
        assert u.shape == (99, rank) and v.shape == (rank, HIDDEN)
        errors.append(((u @ v) - emb).norm().item())
    assert all(a > b for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 1e-4 * emb.norm().item()
    with pytest.raises(ValueError, match=r"mel_rank must be an integer in 1\.\.32"):
        svd_factors(emb, 33)


def test_mel_lookup_uses_the_rank_prefix():
    model = tiny_model()
    ids = torch.tensor([[5, 6, 7]])
    for k in (8, 16, 32):
        expected = (model.mel.U[:, :k] @ model.mel.V[:k])[ids]  # materialise-then-index, the reference way
        torch.testing.assert_close(model.embed_tokens(ids, k), expected)


def test_efficiency_mode_has_no_dense_embedding():
    model = tiny_model(mel_rank=16)
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert (model.config.vocab_size, HIDDEN) not in shapes
    assert model.backbone.embed_tokens is None
    assert model.get_input_embeddings() is model.mel


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layers": 0}, r"layers must be an integer in 1\.\.4 \(trained values: \[1, 2, 4\]\)"),
        ({"layers": 5}, r"layers must be an integer in 1\.\.4"),
        ({"layers": -1}, r"layers must be an integer in 1\.\.4"),
        ({"layers": 2.0}, r"layers must be an integer"),
        ({"layers": True}, r"layers must be an integer"),
        ({"dim": 0}, r"dim must be an integer in 1\.\.32 \(trained values: \[8, 16, 32\]\)"),
        ({"dim": 33}, r"dim must be an integer in 1\.\.32"),
        ({"dim": "8"}, r"dim must be an integer"),
        ({"rank": 0}, r"rank must be an integer in 1\.\.32 \(trained values: \[32\]\)"),
        ({"rank": 64}, r"rank must be an integer in 1\.\.32"),
    ],
)
def test_bad_axis_values_name_the_allowed_range(kwargs, message):
    model = tiny_model()
    ids, mask = batch()
    with pytest.raises(ValueError, match=message):
        model(ids, mask, **kwargs)
    with pytest.raises(ValueError, match=message):
        model.encode(["x"], **kwargs)


def test_rank_without_factorised_embedding_is_an_error():
    model = tiny_model(mel_rank=None)
    with pytest.raises(ValueError, match=r"needs a factorised embedding.*mel_rank=None.*only allowed value is None"):
        model.encode(["x"], rank=8)


def test_untrained_values_work_with_a_warning(caplog):
    model = tiny_model()
    with caplog.at_level(logging.WARNING):
        out = model.encode(["hello"], layers=3, dim=12)
    assert out.shape == (1, 12)
    assert "layers=3 was not trained" in caplog.text and "dim=12 was not trained" in caplog.text


@pytest.mark.parametrize("kind", KINDS)
def test_embedding_does_not_depend_on_batch_or_padding_side(kind):
    model = tiny_model(kind)
    texts = ["a much longer sentence about embeddings", "short", "medium length text"]
    together = model.encode(texts, batch_size=3)
    alone = np.stack([model.encode([t])[0] for t in texts])
    assert abs(together - alone).max() < 1e-5
    if kind != "bert":  # decoders: left padding gives the same embeddings
        ids, mask = batch(right_pad=True)
        left_ids, left_mask = batch(right_pad=False)
        with torch.no_grad():
            torch.testing.assert_close(
                model(ids, mask).embeddings, model(left_ids, left_mask).embeddings, atol=1e-5, rtol=0
            )


def test_encoder_rejects_left_padding():
    model = tiny_model("bert")
    ids, mask = batch(right_pad=False)
    with pytest.raises(ValueError, match="right padding"):
        model(ids, mask)


def test_dim_truncates_then_renormalises():
    model = tiny_model()
    full = model.encode(["some text"])
    short = model.encode(["some text"], dim=8)
    expected = full[:, :8] / (full[:, :8] ** 2).sum(1, keepdims=True) ** 0.5
    assert abs(short - expected).max() < 1e-6


def test_encode_appends_eos_once_and_applies_prompts():
    model = tiny_model()
    tok = tiny_tokenizer()
    batch_ = model.tokenize(["abc", "abcdefghij"], tok, max_length=5)
    assert batch_["input_ids"][0].tolist()[:4] == tok("abc")["input_ids"] + [tok.eos_token_id]
    assert batch_["input_ids"][1].tolist()[-1] == tok.eos_token_id and batch_["input_ids"].shape[1] == 5
    query = model.encode(["what is mel"], prompt_name="query")
    manual = model.encode([model.config.prompts["query"] + "what is mel"])
    assert abs(query - manual).max() < 1e-6
    with pytest.raises(ValueError, match=r"prompt_name must be one of \['document', 'query'\]"):
        model.encode(["x"], prompt_name="passage")


def test_bfloat16_forward_has_no_nan():
    model = tiny_model().to(torch.bfloat16)
    ids, mask = batch()
    with torch.no_grad():
        out = model(ids, mask, exits=True, rank=16, dim=8)
    assert out.embeddings.dtype == torch.bfloat16 and torch.isfinite(out.embeddings).all()
    assert all(torch.isfinite(e).all() for e in out.exit_embeddings.values())


def test_gradients_reach_factors_and_layers():
    model = tiny_model().train()
    ids, mask = batch()
    out = model(ids, mask, exits=True, rank=16)
    sum(e.sum() for e in out.exit_embeddings.values()).backward()
    assert model.mel.U.grad[:, :16].abs().sum() > 0 and model.mel.U.grad[:, 16:].abs().sum() == 0
    assert model._layer(0).mlp.up_proj.weight.grad.abs().sum() > 0


def test_encode_is_deterministic_in_train_mode_and_restores_it():
    model = tiny_model("bert").train()  # BERT has dropout 0.1
    first, second = model.encode(["dropout must be off"]), model.encode(["dropout must be off"])
    assert abs(first - second).max() == 0 and model.training


FAMILY = {  # other stock backbones the same code serves (tiny random configs)
    "qwen2": {"num_key_value_heads": 2, "eos_token_id": 1},
    "mistral": {"num_key_value_heads": 2, "head_dim": 8, "eos_token_id": 1},
    "gemma": {"num_key_value_heads": 2, "head_dim": 8, "eos_token_id": 1},
    "gemma2": {"num_key_value_heads": 2, "head_dim": 8, "eos_token_id": 1, "sliding_window": 4},
    "gemma3_text": {"num_key_value_heads": 2, "head_dim": 8, "eos_token_id": 1, "sliding_window": 4},
    "xlm-roberta": {"max_position_embeddings": 130, "pad_token_id": 1},
    "modernbert": {
        "max_position_embeddings": 128,
        "global_attn_every_n_layers": 2,
        "local_attention": 8,
        "bos_token_id": 2,
        "eos_token_id": 3,
        "cls_token_id": 2,
        "sep_token_id": 3,
    },
}


@pytest.mark.parametrize("model_type", sorted(FAMILY))
def test_other_backbones_match_stock_at_full_setting_and_exits(model_type):
    from transformers import AutoConfig

    torch.manual_seed(0)
    config = AutoConfig.for_model(
        model_type,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        vocab_size=99,
        num_attention_heads=4,
        intermediate_size=64,
        **{"pad_token_id": 0, **FAMILY[model_type]},
    )
    stock = AutoModel.from_config(config).eval()
    ours = from_backbone(stock, mel_rank=HIDDEN).eval()
    ids, mask = batch()
    ids[(ids == config.pad_token_id) & (mask == 1)] = 5  # a real token never carries the padding id
    with torch.no_grad():
        states = stock(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        got = ours(ids, mask, exits=[2, LAYERS])
    norm = getattr(stock, ours._final_norm_name) if ours._final_norm_name else torch.nn.Identity()
    torch.testing.assert_close(
        got.exit_embeddings[LAYERS], ours.pool(states.last_hidden_state, mask), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        got.exit_embeddings[2], ours.pool(norm(states.hidden_states[2]), mask), atol=1e-5, rtol=0
    )


def test_exits_always_end_at_the_requested_depth():
    model = tiny_model()  # exit layers 1, 2, 4
    ids, mask = batch()
    with torch.no_grad():
        out = model(ids, mask, layers=3, exits=True)
        plain = model(ids, mask, layers=3)
    assert sorted(out.exit_embeddings) == [1, 2, 3]
    torch.testing.assert_close(out.embeddings, plain.embeddings, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"exits must be an integer in 1\.\.2"):
        model(ids, mask, layers=2, exits=[4])


def test_num_parameters_matches_formula():
    """What an encode at (layers, rank) uses: layers x per-layer + U[:, :k] + V[:k] + the final norm."""
    model = tiny_model("qwen3", mel_rank=HIDDEN)
    per_layer = sum(p.numel() for p in model.layer_stack[0].parameters())
    norm = HIDDEN  # RMSNorm weight
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    for layers, rank in [(LAYERS, HIDDEN), (2, 16), (1, 8)]:
        expected = layers * per_layer + VOCAB * rank + rank * HIDDEN + norm
        assert model.num_parameters(layers=layers, rank=rank) == expected
    assert model.num_parameters(exclude_embeddings=True) == LAYERS * per_layer + norm
    dense = tiny_model("qwen3", mel_rank=None)
    assert dense.num_parameters(layers=2) == 2 * per_layer + VOCAB * HIDDEN + norm
    with pytest.raises(ValueError, match="rank=8 needs a factorised embedding"):
        dense.num_parameters(rank=8)
    with pytest.raises(ValueError, match=r"layers must be an integer in 1\.\.4"):
        model.num_parameters(layers=5)
    with torch.device("meta"):  # counts need no memory: the same numbers on the meta device
        meta = MLEmbedModel(model.config)
    assert meta.num_parameters(layers=2, rank=16) == model.num_parameters(layers=2, rank=16)


def test_encode_truncates_at_max_seq_length_with_one_warning_and_keeps_the_eos(caplog):
    model = tiny_model(max_seq_length=8)
    tok = model.tokenizer
    long, short = "abcdefghijklmnopqrstuvwxyz", "abc"
    with caplog.at_level(logging.WARNING, logger="modeling_mlembed"):
        got = model.encode([long, short, long + "z"], batch_size=1)
    warnings = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1 and "2 of 3 texts are longer than max_length=8" in warnings[0].getMessage()
    batch = model.tokenize([long], tok)
    assert batch["input_ids"][0].tolist() == tok(long[:7])["input_ids"] + [tok.eos_token_id]  # 7 tokens + EOS
    np.testing.assert_allclose(got[0], model.encode([long[:7]])[0], atol=1e-6)  # truncation = the cut text
    np.testing.assert_allclose(got[1], model.encode([short])[0], atol=1e-6)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="modeling_mlembed"):
        longer = model.encode([long], max_length=64)  # a longer limit: nothing cut, no warning
    assert not [r for r in caplog.records if "truncated" in r.getMessage()]
    assert np.abs(longer[0] - got[0]).max() > 1e-3


def test_encoder_truncation_is_counted_too(caplog):
    model = tiny_model("bert", max_seq_length=6)
    with caplog.at_level(logging.WARNING, logger="modeling_mlembed"):
        model.encode(["abcdefgh", "ab"])
    assert "1 of 2 texts are longer than max_length=6" in caplog.text


def test_max_seq_length_is_checked_against_the_positions():
    with pytest.raises(ValueError, match=r"max_seq_length must be an integer in 2\.\.128 \(the backbone's max_posi"):
        tiny_model("bert", max_seq_length=129)  # the tiny BERT has 128 positions
    assert tiny_model("bert").config.sequence_length == 128  # no length recorded: 512 capped by the positions
    assert tiny_model("qwen3").config.sequence_length == 512


def test_load_time_keywords_are_validated_like_the_config(tmp_path):
    """`from_pretrained(..., mel_rank=0)` sets the value after the config validated itself; the model checks again
    (it crashed with a ZeroDivisionError instead of naming the allowed range)."""
    model = tiny_model("qwen3")
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"mel_rank must be an integer in 1..32"):
        MLEmbedModel.from_pretrained(tmp_path, mel_rank=0)
    with pytest.raises(ValueError, match=r"exit_layers must lie in 1..4"):
        MLEmbedModel.from_pretrained(tmp_path, exit_layers=[2, 9])
