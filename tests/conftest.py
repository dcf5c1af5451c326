"""Tiny random models and a tiny tokenizer, built in code (nothing is downloaded)."""

from __future__ import annotations

import random
import socket
import string
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the two top-level remote-code modules, also from a plain checkout

from configuration_mlembed import MLEmbedConfig  # noqa: E402
from modeling_mlembed import MLEmbedModel  # noqa: E402

# tests/personas run in their own environments (.ci/run), not in the development suite
collect_ignore = ["personas"]

# tests/test_docs.py: the docs' code blocks marked `<!-- docs-test: skip (reason) -->`, listed after the run
DOCS_NOT_RUN = pytest.StashKey[list]()


def pytest_terminal_summary(terminalreporter, config) -> None:
    not_run = config.stash.get(DOCS_NOT_RUN, [])
    if not_run:
        terminalreporter.section(f"docs code blocks not run ({len(not_run)}, marked docs-test: skip)", sep="-")
        for line in not_run:
            terminalreporter.line(line)


VOCAB = 99
HIDDEN = 32
LAYERS = 4
WORDS = "cat dog tree car sun moon fish bird rock rain snow wind lamp door road ship".split()


def free_port() -> int:
    """A free localhost TCP port for a test's process group (torchrun / gloo)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_tokenizer(vocab_size: int = VOCAB):
    """Character-level fast tokenizer: specials + printable chars, padded with extra tokens to `vocab_size` ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<unk>", "<cls>"]
    chars = [c for c in string.printable if not c.isspace() or c == " "]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    vocab.update({f"<extra_{i}>": i for i in range(len(vocab), vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>", cls_token="<cls>"
    )


def backbone_config(kind: str = "qwen3", **overrides):
    """Tiny random backbone configs: hidden 32, 4 layers, vocab 99."""
    from transformers import BertConfig, LlamaConfig, Qwen3Config

    common = dict(
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        vocab_size=VOCAB,
        num_attention_heads=4,
        intermediate_size=64,
        pad_token_id=0,
        eos_token_id=1,
    )
    common.update(overrides)
    if kind == "qwen3":
        return Qwen3Config(**{"num_key_value_heads": 2, "head_dim": 8, **common})
    if kind == "llama":
        return LlamaConfig(num_key_value_heads=2, **common)
    if kind == "bert":
        return BertConfig(max_position_embeddings=128, **common)
    raise ValueError(kind)


def synthetic_retrieval(n: int, seed: int):
    """Rows of the published parquet format: queries are two words, the positive contains them, negatives are
    random word triples (8 of them)."""
    import pandas as pd

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.sample(WORDS, 3)
        negatives = {f"negative_{j}": " ".join(rng.sample(WORDS, 3)) for j in range(1, 9)}
        rows.append({"query": " ".join(words[:2]), "passage": " ".join(words) + " here", **negatives})
    return pd.DataFrame(rows)


def tiny_model(kind: str = "qwen3", mel_rank: int | None = HIDDEN, seed: int = 0, **axes) -> MLEmbedModel:
    torch.manual_seed(seed)
    config = MLEmbedConfig.from_backbone(backbone_config(kind), mel_rank=mel_rank, **axes)
    model = MLEmbedModel(config).eval()
    model.tokenizer = tiny_tokenizer()
    return model


@pytest.fixture
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def qwen3_model():
    return tiny_model("qwen3")


# ----------------------------------------------------------------------------------------- gettext catalogues
LOCALE = "usr/share/locale/{}/LC_MESSAGES/{}.mo"


def write_mo(entries: dict[str, str]) -> bytes:
    """A little-endian GNU .mo file: magic, revision 0, N, offset of the msgid table, of the msgstr table, no hash."""
    keys = sorted(entries, key=lambda key: key.encode())
    ids = [key.encode() for key in keys]
    strs = [entries[key].encode() for key in keys]
    ids_table, strs_table = 28, 28 + 8 * len(keys)
    offset = strs_table + 8 * len(keys)
    tables, data = [b"", b""], b""
    for side, texts in enumerate((ids, strs)):
        for text in texts:
            tables[side] += struct.pack("<2I", len(text), offset + len(data))
            data += text + b"\0"
    return struct.pack("<7I", 0x950412DE, 0, len(keys), ids_table, strs_table, 0, 0) + tables[0] + tables[1] + data


def build_deb(folder: Path, package: str, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    """A real .deb made by dpkg-deb --build from a tree of files (and symlinks)."""
    root = folder / package
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    for name, target in (links or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(target)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.2-3\nArchitecture: all\nMaintainer: Test <test@example.org>\n"
        "Description: test package\n"
    )
    deb = folder / f"{package}_1.2-3_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)], check=True, capture_output=True
    )
    return deb


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread (two spin against each other on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
