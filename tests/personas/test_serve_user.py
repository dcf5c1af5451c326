"""A CPU serving user's environment: the wheel with the `serve` extra, plus fastembed.

fastembed pins huggingface_hub < 2, so it lives in its own environment instead of the development one (which
tests huggingface_hub 2). Run by `.ci/run` in a fresh virtual environment, from outside the repository, with
`--noconftest`, after `build_fixtures.py` wrote `$PERSONA_FIXTURES`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(os.environ["PERSONA_FIXTURES"])
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
TEXTS = EXPECTED["texts"]
MLEMBED = shutil.which("mlembed", path=str(Path(sys.executable).parent))


def expected(layers=None, dim=None, rank=None, prompt=None) -> np.ndarray:
    for s in EXPECTED["settings"]:
        if (s["layers"], s["dim"], s["rank"], s["prompt"]) == (layers, dim, rank, prompt):
            return np.asarray(s["embeddings"], dtype=np.float32)
    raise KeyError((layers, dim, rank, prompt))


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory) -> Path:
    """The export at layers=1, rank=8, dim=8, its int8 graph smoothed with the test texts (`--calibration`)."""
    root = tmp_path_factory.mktemp("serve")
    (root / "texts.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = root / "onnx"
    proc = subprocess.run(
        [MLEMBED, "export", str(FIXTURES / "hub"), str(out), "--mode", "onnx", "--layers", "1", "--rank", "8"]
        + ["--dim", "8", "--calibration", str(root / "texts.txt")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "pre-processing" not in proc.stderr  # ONNX Runtime's advice, which cannot be followed, is dropped
    setting = json.loads((out / "config.json").read_text())["mlembed_onnx"]
    assert setting["int8_smooth"] == {"alpha": 0.75, "texts": len(TEXTS)}
    return out


def test_installed_from_the_wheel_with_the_serve_extra():
    import fastembed  # noqa: F401
    import huggingface_hub

    import mlembed

    assert "site-packages" in mlembed.__file__, mlembed.__file__
    assert int(huggingface_hub.__version__.split(".")[0]) == 1  # what fastembed allows: 1.x is supported too


def test_fastembed_serves_the_export_with_the_package_vectors(onnx_folder, tmp_path):
    import fastembed

    from mlembed import serving

    prompt = json.loads((onnx_folder / "config_sentence_transformers.json").read_text())["prompts"]["query"]
    for int8 in (False, True):
        name = serving.register_fastembed(onnx_folder, int8=int8)
        embedder = fastembed.TextEmbedding(name, specific_model_path=str(onnx_folder), cache_dir=str(tmp_path))
        # int8 activations get one scale per batch and the two batch in another order: one text a batch there
        batch = 1 if int8 else 2
        got = np.stack(list(embedder.embed([prompt + t for t in TEXTS], batch_size=batch)))  # fastembed adds no prompt
        ours = serving.OnnxEmbedder(onnx_folder, int8=int8).encode(TEXTS, prompt_name="query", batch_size=batch)
        np.testing.assert_allclose(got, ours, atol=1e-5, rtol=0)
        if int8:
            cos = (got * expected(1, 8, 8, "query")).sum(-1)
            assert cos.mean() >= 0.95, cos  # a tiny random model: int8 noise is larger than on a real one
        else:
            np.testing.assert_allclose(got, expected(1, 8, 8, "query"), atol=1e-4, rtol=0)


def test_mlembed_encode_onnx(onnx_folder):
    proc = subprocess.run(
        [MLEMBED, "encode", str(onnx_folder), "--onnx", "--prompt", "query", *TEXTS],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    got = np.asarray(json.loads(proc.stdout), dtype=np.float32)
    np.testing.assert_allclose(got, expected(1, 8, 8, "query"), atol=1e-4, rtol=0)
