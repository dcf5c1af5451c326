"""The released family (mlembed.sizes) at scale on the meta device, and the model cards generated from it.

Expected counts are computed here by hand from the architecture (per-layer formula), independently of the code
under test, and pinned against the figures published for Qwen3 and in the ML-Embed paper.
"""

from __future__ import annotations

import re

import pytest
from conftest import ROOT, backbone_config, tiny_model
from huggingface_hub import ModelCard

from configuration_mlembed import MLEmbedConfig
from mlembed import sizes
from mlembed.cli import main as cli
from mlembed.export import cards

CARDS_DIR = ROOT / "model_cards"
TOKENIZER_ROWS = 151_669


def expected_dense_total(arch: dict) -> int:
    """Stock Qwen3Model (no lm_head): embedding + L x (attention, q/k norms, SwiGLU MLP, 2 RMSNorms) + final norm."""
    d, hd, ffn = arch["hidden_size"], arch["head_dim"], arch["intermediate_size"]
    q_width, kv_width = arch["num_attention_heads"] * hd, arch["num_key_value_heads"] * hd
    attention = d * q_width + 2 * d * kv_width + q_width * d  # q, k, v, o projections, no bias
    layer = attention + 2 * hd + 3 * d * ffn + 2 * d  # + q_norm, k_norm; gate, up, down; 2 RMSNorms
    return arch["vocab_size"] * d + arch["num_hidden_layers"] * layer + d


def expected_mel_embedding(rows: int, rank: int, d: int) -> int:
    return rows * rank + rank * d  # U[:, :k] and V[:k]


def m(n: float) -> float:
    return round(n / 1e6, 1)


# ------------------------------------------------------------------------------------------------------ sizes
def test_family_names_and_lookup():
    assert sizes.SIZES == ("80M", "160M", "330M", "0.6B", "1.7B", "4B", "8B", "14B")
    assert sizes.get_size("8b") is sizes.get_size("8B") is sizes.get_size("ml-embed/8b")
    assert [sizes.get_size(n).repo_id for n in ("8B", "0.6B")] == ["ml-embed/8b", "ml-embed/0.6b"]
    assert [s.assumed for s in sizes.FAMILY] == [True, True, True, False, False, False, False, False]
    with pytest.raises(ValueError, match=r"unknown size '9B'; choose one of \['80M'"):
        sizes.get_size("9B")


def test_public_architectures():
    """The public sizes carry the published Qwen3 shapes (hidden, layers, q / kv heads, FFN)."""
    public = {
        "0.6B": (1024, 28, 16, 8, 3072, True),
        "1.7B": (2048, 28, 16, 8, 6144, True),
        "4B": (2560, 36, 32, 8, 9728, True),
        "8B": (4096, 36, 32, 8, 12288, False),
        "14B": (5120, 40, 40, 8, 17408, False),
    }
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size")
    for name, shape in public.items():
        arch = sizes.get_size(name).backbone
        assert tuple(arch[k] for k in keys) + (arch["tie_word_embeddings"],) == shape, name
        assert (arch["head_dim"], arch["vocab_size"]) == (128, 151_936)
        assert sizes.get_size(name).base_model == f"Qwen/Qwen3-{name}"


@pytest.mark.parametrize("name", sizes.SIZES)
def test_meta_counts_match_hand_formula(name):
    size = sizes.get_size(name)
    arch, r = dict(size.backbone), size.mel_rank
    d, rows = arch["hidden_size"], arch["vocab_size"]
    model = sizes.build_on_meta(name)
    assert model.mel.U.shape == (rows, r) and model.mel.V.shape == (r, d)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert not any("embed_tokens" in n for n, _ in model.named_parameters())  # efficiency mode: no dense E
    dense_total = expected_dense_total(arch)
    non_embedding = dense_total - rows * d
    assert sum(p.numel() for p in model.parameters()) == non_embedding + expected_mel_embedding(rows, r, d)

    counts = sizes.parameter_counts(name)
    assert counts["total"] == dense_total
    assert counts["non_embedding"] == non_embedding
    assert (counts["dense_embedding"], counts["dense_embedding_tokenizer"]) == (rows * d, TOKENIZER_ROWS * d)
    assert list(counts["mel_total"]) == sorted(model.config.mel_ranks, reverse=True)
    for k in model.config.mel_ranks:
        assert counts["mel_embedding"][k] == expected_mel_embedding(rows, k, d)
        assert counts["mel_embedding_tokenizer"][k] == expected_mel_embedding(TOKENIZER_ROWS, k, d)
        assert counts["mel_total"][k] == non_embedding + expected_mel_embedding(rows, k, d)
        assert counts["mel_embedding_share"][k] == pytest.approx(
            expected_mel_embedding(rows, k, d) / (non_embedding + expected_mel_embedding(rows, k, d))
        )


def test_published_figures():
    """Pinned: Qwen3-0.6B's exact count, the paper's MEL arithmetic and the Qwen3 model cards' rounded figures."""
    small = sizes.parameter_counts("0.6B")
    assert small["total"] == 596_049_920
    assert small["dense_embedding_tokenizer"] == 155_309_056 == 151_669 * 1024
    assert round(small["dense_embedding_tokenizer"] / small["total"], 2) == 0.26  # "26% of the model"
    assert {k: m(small["mel_embedding_tokenizer"][k]) for k in (512, 256, 128)} == {512: 78.2, 256: 39.1, 128: 19.5}
    big = sizes.parameter_counts("8B")
    assert round(big["dense_embedding_tokenizer"] / 1e6) == 621 and m(big["mel_embedding_tokenizer"][512]) == 79.8
    # Qwen3 cards: total (with the LM head unless tied) / non-embedding
    published = {"0.6B": (0.6, 0.44), "1.7B": (1.7, 1.4), "4B": (4.0, 3.6), "8B": (8.2, 6.95), "14B": (14.8, 13.2)}
    for name, (total, non_embedding) in published.items():
        counts, arch = sizes.parameter_counts(name), sizes.get_size(name).backbone
        lm_head = 0 if arch["tie_word_embeddings"] else counts["dense_embedding"]
        assert round((counts["total"] + lm_head) / 1e9, 1) == round(total, 1), name
        digits = len(str(non_embedding).split(".")[1])
        assert round(counts["non_embedding"] / 1e9, digits) == non_embedding, name


def test_assumed_sizes_land_near_their_names():
    for name, target in (("80M", 80e6), ("160M", 160e6), ("330M", 330e6)):
        assert sizes.parameter_counts(name)["total"] == pytest.approx(target, rel=0.05), name
    # the paper's "140M" is most likely 160M with a rank-512 embedding
    assert sizes.parameter_counts("160M")["mel_total"][512] == pytest.approx(140e6, rel=0.05)


def test_counts_of_a_custom_config_match_a_real_model():
    model = tiny_model("qwen3", mel_rank=16)
    counts = sizes.parameter_counts(model.config)
    assert counts["tokenizer_rows"] == counts["vocab_rows"] == 99
    assert counts["mel_total"][16] == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match=r"tokenizer_rows must lie in 1\.\.99"):
        sizes.parameter_counts(model.config, tokenizer_rows=100)


def test_size_config_overrides_axes():
    config = sizes.size_config("0.6B", mel_rank=256, exit_layers=[14, 28])
    assert (config.mel_rank, config.mel_ranks, config.exit_layers) == (256, [64, 128, 256], [14, 28])
    assert config.rope_parameters["rope_theta"] == 1_000_000.0
    assert sizes.size_config("0.6B").backbone_config().to_dict()["max_position_embeddings"] == 40_960


# ------------------------------------------------------------------------------------------------------ cards
def test_committed_cards_are_current(tmp_path):
    assert cli(["cards", "-o", str(tmp_path)]) == 0
    fresh = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.iterdir()}
    committed = {p.name: p.read_text(encoding="utf-8") for p in CARDS_DIR.glob("*.md")}
    assert sorted(fresh) == sorted([f"{s.lower()}.md" for s in sizes.SIZES] + ["template.md"])
    assert sorted(committed) == sorted(fresh), "run `mlembed cards` and commit model_cards/"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale cards {stale}: run `mlembed cards`"
    assert fresh["template.md"] == cards.TEMPLATE_PATH.read_text(encoding="utf-8")


def table_rows(text: str) -> dict[str, list[int]]:
    """{'dense' | rank: [embedding at vocab rows, at tokenizer rows, total]} parsed from a card's markdown table."""
    rows = {}
    for label, cells in re.findall(r"^\| (dense E|MEL rank \d+)[^|]*\|(.*)\|$", text, flags=re.M):
        key = "dense" if label == "dense E" else int(label.split()[-1])
        rows[key] = [int(cell.split()[0].replace(",", "")) for cell in cells.split("|")[:3]]
    return rows


def field(text: str, name: str) -> str:
    return re.search(rf"^\| {re.escape(name)} \| (.*) \|$", text, flags=re.M).group(1)


@pytest.mark.parametrize("name", sizes.SIZES)
def test_card_numbers_match_the_architecture(name):
    size = sizes.get_size(name)
    text = (CARDS_DIR / f"{size.slug}.md").read_text(encoding="utf-8")
    arch, r = dict(size.backbone), size.mel_rank
    d, rows = arch["hidden_size"], arch["vocab_size"]
    dense_total = expected_dense_total(arch)
    non_embedding = dense_total - rows * d
    expected = {"dense": [rows * d, TOKENIZER_ROWS * d, dense_total]}
    config = sizes.size_config(name)
    for k in config.mel_ranks:
        emb = expected_mel_embedding(rows, k, d)
        expected[k] = [emb, expected_mel_embedding(TOKENIZER_ROWS, k, d), non_embedding + emb]
    assert table_rows(text) == expected
    assert max(k for k in expected if k != "dense") == r
    assert field(text, "Exit layers (MLL)") == ", ".join(map(str, config.exit_layers))
    assert field(text, "Output dims (MRL)") == ", ".join(map(str, config.matryoshka_dims))
    assert f"hidden {d}, " in field(text, "Backbone") and f"{arch['num_hidden_layers']} layers" in text
    assert f'SentenceTransformer("{size.repo_id}", truncate_dim=256)' in text
    assert ("Assumed architecture" in text) == size.assumed
    assert "## Evaluation" not in text


@pytest.mark.parametrize("name", sizes.SIZES)
def test_card_metadata(name):
    card = ModelCard.load(CARDS_DIR / f"{name.lower()}.md")
    data = card.data
    assert data.license == "apache-2.0"
    assert data.library_name == "sentence-transformers"
    assert data.pipeline_tag == "sentence-similarity"
    assert {"sentence-transformers", "feature-extraction", "matryoshka", "elastic", "mteb"} <= set(data.tags)
    assert data.base_model == sizes.get_size(name).base_model
    assert {"multilingual", "en", "zh", "pl", "vi", "de", "fr", "hi"} <= set(data.language)
    assert all(re.fullmatch(r"[a-z]{2}|multilingual", code) for code in data.language)


@pytest.mark.parametrize("kind", ["qwen3", "bert"])
def test_card_for_a_custom_config(kind):
    config = MLEmbedConfig.from_backbone(backbone_config(kind), mel_rank=16)
    eval_table = "| Task | Score |\n|---|---:|\n| STS17 | 80.1 |"
    card = cards.render_card(config, repo_id="me/tiny-embed", eval_table=eval_table)
    text = str(card)
    reparsed = ModelCard(text)
    assert reparsed.data.base_model is None and reparsed.data.license == "apache-2.0"
    assert "# ML-Embed (tiny-embed)" in text and "Assumed architecture" not in text
    assert "## Evaluation\n\n" + eval_table in text
    # usage snippets only name values the model accepts
    assert 'AutoModel.from_pretrained("me/tiny-embed", trust_remote_code=True)' in text
    assert "layers=2, dim=16, rank=16" in text
    counts = sizes.parameter_counts(config)
    assert table_rows(text)[16] == [99 * 16 + 16 * 32, 99 * 16 + 16 * 32, counts["mel_total"][16]]


def test_card_without_mel_or_eval_table():
    config = MLEmbedConfig.from_backbone(backbone_config("qwen3"), mel_rank=None)
    text = str(cards.render_card(config))
    assert "Parameters per MEL rank" not in text and "mel.safetensors" not in text
    assert "rank=" not in text and "default_rank" not in text
    assert "## Evaluation" not in text
    assert 'config_kwargs={"default_layers": 2}' in text


def test_unknown_size_card():
    with pytest.raises(ValueError, match=r"unknown size '3B'"):
        cards.render_card("3B")


def test_write_cards_with_eval_table(tmp_path):
    paths = cards.write_cards(tmp_path, eval_tables={"8b": "| MTEB (Polish) | 73.84 |"})
    assert [p.name for p in paths][-1] == "template.md" and len(paths) == len(sizes.SIZES) + 1
    assert "## Evaluation\n\n| MTEB (Polish) | 73.84 |\n" in (tmp_path / "8b.md").read_text()
    assert "## Evaluation" not in (tmp_path / "4b.md").read_text()
