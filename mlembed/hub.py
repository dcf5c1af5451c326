"""Hugging Face Hub: the local cache layout and (with the sentence-transformers files) complete Hub folders."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from huggingface_hub import constants


def _snapshot_hash(folder: Path) -> str:
    """A 40-hex revision id derived from the folder's files, so re-installing the same build is a no-op."""
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def install_into_cache(folder: str | Path, repo_id: str, cache_dir: str | Path | None = None) -> Path:
    """Place a model folder into the HF cache as snapshot `main` of `repo_id` (loads by id offline).

    Writes `models--{org}--{name}/snapshots/<hash>/` and `refs/main`, the layout `hf_hub_download` leaves, so
    `from_pretrained(repo_id)` with `HF_HUB_OFFLINE=1` finds it. Returns the snapshot folder.
    """
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json)")
    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = _snapshot_hash(folder)
    snapshot = repo / "snapshots" / revision
    if not snapshot.exists():
        tmp = snapshot.with_name(revision + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(folder, tmp)
        tmp.rename(snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot
