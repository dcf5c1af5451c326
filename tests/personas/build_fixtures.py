"""Fixtures for the persona environments, built with the package in the development environment.

`python tests/personas/build_fixtures.py OUT` writes:

* `OUT/base/`: a tiny random stock Qwen3 backbone with a character tokenizer (what a user would convert);
* `OUT/hub/`: that backbone converted (MEL rank 32) and exported as a Hub folder;
* `OUT/cache/`: the Hub folder installed in a private HF cache as `ml-embed/persona` (what a download leaves);
* `OUT/expected.json`: embeddings the package's own model computes, per setting, for the persona tests to match.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from conftest import backbone_config, tiny_tokenizer  # noqa: E402
from transformers import AutoModel  # noqa: E402

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


def main(out: Path) -> None:
    torch.manual_seed(0)
    AutoModel.from_config(backbone_config("qwen3")).save_pretrained(out / "base")
    tiny_tokenizer().save_pretrained(out / "base")
    convert.convert_base(out / "base", out / "ml", rank=32)
    hub.export_hub(out / "ml", out / "hub", repo_id=REPO_ID)
    hub.install_into_cache(out / "hub", REPO_ID, cache_dir=out / "cache")
    model = MLEmbedModel.from_pretrained(out / "hub").eval()
    expected = {"repo_id": REPO_ID, "texts": TEXTS, "settings": []}
    for layers, dim, rank in SETTINGS:
        for prompt in (None, "query"):
            emb = model.encode(TEXTS, layers=layers, dim=dim, rank=rank, prompt_name=prompt)
            expected["settings"].append(
                {"layers": layers, "dim": dim, "rank": rank, "prompt": prompt, "embeddings": emb.tolist()}
            )
    (out / "expected.json").write_text(json.dumps(expected))
    print(f"wrote persona fixtures to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
