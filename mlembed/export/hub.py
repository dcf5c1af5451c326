"""Hugging Face Hub: the local cache layout and (with the sentence-transformers files) complete Hub folders."""

from __future__ import annotations

import hashlib
import json
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
    `from_pretrained(repo_id)` with `HF_HUB_OFFLINE=1` finds it; the files are those `push_to_hub` would upload
    (`auto_map` qualified with `repo_id`). Returns the snapshot folder.
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
        (tmp / "config.json").write_bytes(hub_config(folder, repo_id))  # as `push_to_hub` would upload it
        tmp.rename(snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def export_hub(
    src: str | Path,
    out: str | Path,
    repo_id: str | None = None,
    max_seq_length: int | None = None,
    dtype: str = "auto",
    eval_table: str | None = None,
) -> Path:
    """One folder for both worlds: stock loaders (compatibility mode) and the elastic remote-code model.

    * `model.safetensors` is exactly the stock backbone's checkpoint (dense E = U V): stock `AutoModel` and
      sentence-transformers load it without remote code and without unexpected-key reports.
    * `mel.safetensors` holds the factors U, V; `MLEmbedModel` reads them and skips the dense E (never allocated).
      `exit_modules.safetensors` holds the decoupled exits' modules, if any (the full path stock code computes does
      not use them).
    * `config.json` is the backbone's (its `model_type`, stock `architectures`) plus the ML-Embed fields and a local
      `auto_map` (`modeling_mlembed.MLEmbedModel`): the folder loads with `trust_remote_code=True` from its path,
      offline, before it is pushed. `push_to_hub` qualifies the `auto_map` with the repo id in the uploaded copy
      (`org/name--modeling_mlembed.MLEmbedModel`), so a copy re-saved by stock code from the Hub still finds the
      remote code and gets a clear error instead of random factors. `repo_id` here only names the model card's repo.
    * sentence-transformers files with built-in modules only (Transformer -> Pooling -> Normalize, prompts) in the
      classic layout serving engines parse, `matryoshka_dimensions` / `is_matryoshka` in `config.json`
      (`mlembed.export.engines`), and a tokenizer that appends EOS after truncation (decoders).
    * `max_seq_length` (default: the model's, what it was trained or evaluated for) in `config.json`,
      `sentence_bert_config.json` and the tokenizer's `model_max_length`.
    * `README.md`, the model card (`render_card`), with `eval_table` (markdown) as its evaluation section.
    """
    from safetensors.torch import save_file

    from mlembed.export import engines
    from mlembed.export.convert import export_max_seq_length, load_tokenizer, save_folder_files, stock_backbone
    from modeling_mlembed import EXIT_WEIGHTS_NAME, MEL_WEIGHTS_NAME, MLEmbedModel

    src, out = Path(src), Path(out)
    model = MLEmbedModel.from_pretrained(src, dtype=dtype)  # `auto`: the source's dtype
    model.config.max_seq_length = export_max_seq_length(model.config, max_seq_length)
    stock = stock_backbone(model)
    stock.save_pretrained(out)
    if model.mel is not None:
        factors = {"U": model.mel.U.detach().contiguous(), "V": model.mel.V.detach().contiguous()}
        save_file(factors, out / MEL_WEIGHTS_NAME, metadata={"format": "pt"})
    if model.exit_modules is not None:
        exits = {f"exit_modules.{k}": v.detach().contiguous() for k, v in model.exit_modules.state_dict().items()}
        save_file(exits, out / EXIT_WEIGHTS_NAME, metadata={"format": "pt"})
    model.config.architectures = [type(stock).__name__]
    model.config.auto_map = {
        "AutoConfig": "configuration_mlembed.MLEmbedConfig",
        "AutoModel": "modeling_mlembed.MLEmbedModel",
    }
    model.config.save_pretrained(out)
    save_folder_files(out)
    # EOS appended by tokenizer.json itself (persisted; truncation keeps room for it), the model's max length
    engines.save_tokenizer(load_tokenizer(src), out, model.config.max_seq_length, append_eos=model.config.append_eos)
    # stock loaders read the dense checkpoint; engines read the Matryoshka keys and the module files
    engines.update_config_json(out, {"model_type": model.config.backbone_type})
    engines.write_engine_files(out, model.config, max_seq_length=model.config.max_seq_length)
    from mlembed.export.cards import render_card

    render_card(model.config, repo_id=repo_id, eval_table=eval_table).save(out / "README.md")
    return out


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Create the repo if needed and upload a Hub folder in one commit; returns the commit URL.

    The uploaded `config.json` has its `auto_map` qualified with `repo_id` (`hub_config`); the local folder is left
    as it is (it keeps loading from its path, offline).
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json); export it with export_hub first")
    files = {path.relative_to(folder).as_posix(): path for path in sorted(folder.rglob("*")) if path.is_file()}
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path))
        for name, path in files.items()
        if name != "config.json" and not name.startswith(".cache/")  # huggingface_hub's local upload metadata
    ]
    operations.append(CommitOperationAdd(path_in_repo="config.json", path_or_fileobj=hub_config(folder, repo_id)))
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    commit = api.create_commit(repo_id=repo_id, operations=operations, commit_message="Upload ML-Embed model")
    return str(commit.commit_url)


def hub_config(folder: str | Path, repo_id: str) -> bytes:
    """The folder's `config.json` as the Hub copy holds it: `auto_map` entries qualified with `repo_id`."""
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    config = json.loads((Path(folder) / "config.json").read_text())
    if "auto_map" in config:
        config["auto_map"] = {k: f"{repo_id}--{v.split('--')[-1]}" for k, v in config["auto_map"].items()}
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
