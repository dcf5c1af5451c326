"""The README's first command as CI runs it (`quickstart.sh --smoke`): every stage ran, in the venv it created.

Run by `.ci/run` with that venv's Python, from outside the repository, with `--noconftest`. `MLEMBED_CACHE` is the
cache the smoke run used (its `-smoke` sibling holds the results), `QUICKSTART_LOG` its printed output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # the model exists only in the local cache (read when huggingface_hub loads)
LOG = Path(os.environ["QUICKSTART_LOG"]).read_text(encoding="utf-8")
CACHE = Path(f"{os.environ['MLEMBED_CACHE']}-smoke")
REPO_ID = "ml-embed/mini-smoke"


def test_every_step_ran_and_was_reported():
    for step in ("data", "data-ood", "convert", "train", "train-exits", "export", "eval"):
        assert (CACHE / "timings.json").is_file()
        assert step in json.loads((CACHE / "timings.json").read_text()), step
    assert f"Multilingual semantic search with {REPO_ID}" in LOG
    assert "query: thời tiết ngày mai" in LOG  # the demo ran through the installed model id
    assert "Elastic tables on both held-out sets" in LOG and "| ml-embed-mini |" in LOG
    assert "bench/ablation.py --only anchors" in LOG  # no anchors trained in this cache: says how to get them
    assert "texts/s" not in LOG  # no speed figure timed inside the evaluation
    card = (CACHE / "hub" / "README.md").read_text(encoding="utf-8")
    assert "two-stage recipe" in card and "| ml-embed-mini |" in card  # the card says the recipe, with the table


def test_the_table_has_every_model_and_setting_on_both_sets():
    report = json.loads((CACHE / "eval" / "results.json").read_text())
    assert set(report["sets"]) == {"debian", "catalogues"}
    for held_out in report["sets"].values():
        models = held_out["models"]
        assert set(models) == {"stock", "mini"}
        assert {r["axis"] for r in models["mini"]} == {"full", "layers", "dim", "rank", "combined"}
        assert {r["axis"] for r in models["stock"]} == {"full"}
        assert all(0.0 <= r["ndcg_at_10"] <= 1.0 for rows in models.values() for r in rows)


def test_the_installed_model_loads_by_id_offline():
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    elastic = AutoModel.from_pretrained(REPO_ID, trust_remote_code=True)
    assert elastic.encode(["thời tiết ngày mai"], prompt_name="query", layers=3, dim=96, rank=64).shape == (1, 96)
    assert SentenceTransformer(REPO_ID).encode(["apt installs packages"]).shape == (1, 384)
