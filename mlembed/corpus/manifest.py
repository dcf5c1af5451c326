"""`manifest.json`: what a corpus folder holds (model, setting, precision, int8 ranges, input, shards) and the
fingerprint that ties it to a model: the embedding of a fixed probe text at the run's setting."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "mlembed-corpus/1"
MANIFEST_NAME = "manifest.json"
PROBE_TEXT = "ML-Embed corpus fingerprint: the quick brown fox jumps over the lazy dog."
PROBE_MIN_COSINE = 0.99  # bf16 on a GPU against fp32 on a CPU stays above 0.999; another model or setting does not


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ValueError(f"{out_dir}: no {MANIFEST_NAME}; encode a corpus there first (mlembed encode-corpus)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    tmp = out_dir / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out_dir / MANIFEST_NAME)


def check_fingerprint(manifest: dict[str, Any], probe: Sequence[float], what: str) -> None:
    """Refuse a model / setting whose probe embedding differs from the one recorded in the manifest."""
    stored = np.asarray(manifest["fingerprint"], dtype=np.float32)
    probe = np.asarray(probe, dtype=np.float32)
    cosine = float(stored @ probe / max(np.linalg.norm(stored) * np.linalg.norm(probe), 1e-12))
    if stored.shape != probe.shape or cosine < PROBE_MIN_COSINE:
        setting = manifest["setting"]
        raise ValueError(
            f"{what} does not match the corpus manifest (model {manifest['model']!r}, layers={setting['layers']}, "
            f"rank={setting['rank']}, prompt {setting['prompt_name']!r}): its embedding of the probe text has "
            f"cosine {cosine:.3f} to the recorded one (needs >= {PROBE_MIN_COSINE})"
        )


_IDENTITY_KEYS = ("setting", "precision", "input", "shard_size")  # the model: by its fingerprint, not its path


def check_same_run(old: dict[str, Any], new: dict[str, Any], out_dir: Path) -> None:
    for key in _IDENTITY_KEYS:
        if old.get(key) != new.get(key):
            raise ValueError(
                f"{out_dir} holds a corpus encoded with {key}={json.dumps(old.get(key))}, this run asks for "
                f"{key}={json.dumps(new.get(key))}; resume with the same settings, or write to a new folder"
            )


def job_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the CLI prints after a run."""
    return {
        "rows": sum(s["rows"] for s in manifest["shards"]),
        "shards": len(manifest["shards"]),
        "dim": manifest["dim"],
        "precision": manifest["precision"],
        "setting": manifest["setting"],
    }
