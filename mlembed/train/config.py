"""Typed recipe configs: a JSON file with the sections model / data / loss / training / export.

`training` is passed as is to `transformers.TrainingArguments` (its names, its validation); the other sections
are ours and every key is checked, with errors listing the allowed keys.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass
class ModelSection:
    """base: an ML-Embed folder to continue from, or a stock backbone (folder or Hub id) converted on the fly.

    trust_remote_code: allow a stock backbone's own remote code (never needed for ML-Embed folders, which load
    through the installed classes).
    frozen_layers: train only the layers above the first N; everything else (the token embedding, its MEL factors,
    the first N layers, any final norm) keeps its weights, so every setting with `layers <= N` stays bit-identical.
    For a second phase on a trained 3D model (`base` its folder) that gives the full depth more room.
    exit_modules: decoupled exits for the base (`MLEmbedConfig.exit_modules`: `{"kind": "lora" | "adapter",
    "exits": [...], "rank": r[, "alpha": a]}`), added identity-initialised where the base has none; the second stage
    of the two-stage recipe (`loss.stage: "exits"`) trains them.
    """

    base: str = ""
    trust_remote_code: bool = False
    mel_rank: int | None = None
    exit_layers: list[int] | None = None
    matryoshka_dims: list[int] | None = None
    dtype: str = "float32"
    frozen_layers: int = 0
    exit_modules: dict[str, Any] | None = None


@dataclass
class DataSection:
    """Parquet files in the published format (globs allowed, relative to the config file)."""

    train: list[str] = field(default_factory=list)
    dataset_types: dict[str, str] = field(default_factory=dict)
    instructions: dict[str, str] = field(default_factory=dict)
    num_negatives: dict[str, int] = field(default_factory=dict)
    max_rows: int = 80_000
    max_length: int = 512
    on_invalid: str = "error"


@dataclass
class LossSection:
    """Axes switches are the ablations: mel / mll / mrl off = full rank / last layer / full dim only.

    dim_weights / exit_weights: {dim or exit layer (JSON keys are strings): weight}; empty = the paper's MRL weights
    and the plain mean over exits. self_distill: weight of the self-distillation term (`ThreeDObjective`), 0 = off.
    exit_dims: {exit layer: [dims]}: train only those dims at those exits, weight 1 each (Starbucks-style diagonal
    (layers, dims) pairs, arXiv 2410.13230); other exits train every dim. rank_weights: {MEL rank: sampling
    weight} for every trained rank; empty = the paper's P(k) ~ k.
    stage: "all" (everything trains: the paper's shared recipe, or the first stage of the two-stage one) or "exits"
    (the second stage: the body is frozen and only the exit modules train, each exit in its own pass, contrastive at
    the exit plus `self_distill` x KL to the full setting's in-batch scores; the full path stays bit-identical).
    """

    temperature: float = 0.05
    mel: bool = True
    mll: bool = True
    mrl: bool = True
    kd_weight: float = 0.0
    teacher: str | None = None
    dim_weights: dict[str, float] = field(default_factory=dict)
    exit_weights: dict[str, float] = field(default_factory=dict)
    self_distill: float = 0.0
    stage: str = "all"
    exit_dims: dict[str, list[int]] = field(default_factory=dict)
    rank_weights: dict[str, float] = field(default_factory=dict)

    def int_keyed(self, name: str) -> dict[int, float] | None:
        """`dim_weights` / `exit_weights` / `rank_weights` with integer keys (None when empty)."""
        return {int(key): float(value) for key, value in getattr(self, name).items()} or None


@dataclass
class ExportSection:
    hub: bool = True
    repo_id: str | None = None


@dataclass
class TrainConfig:
    launch: str = ""
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    training: dict[str, Any] = field(default_factory=dict)
    export: ExportSection = field(default_factory=ExportSection)
    root: Path = field(default=Path("."), repr=False)

    def data_files(self) -> list[Path]:
        """The training parquet files, globs expanded relative to the config's folder."""
        files: list[Path] = []
        for pattern in self.data.train:
            path = Path(pattern) if Path(pattern).is_absolute() else self.root / pattern
            matches = sorted(path.parent.glob(path.name)) if any(c in path.name for c in "*?[") else [path]
            if not matches or not all(p.is_file() for p in matches):
                raise FileNotFoundError(f"data.train: no parquet file matches {pattern!r} (looked in {path.parent})")
            files.extend(matches)
        return files

    def training_arguments(self, **overrides: Any) -> Any:
        """`transformers.TrainingArguments` from the `training` section (paths relative to the config)."""
        from transformers import TrainingArguments

        kwargs = {**self.training, **overrides}
        for key in ("output_dir", "deepspeed"):
            if isinstance(kwargs.get(key), str) and not Path(kwargs[key]).is_absolute():
                kwargs[key] = str(self.root / kwargs[key])
        return TrainingArguments(**kwargs)


STAGES = ("all", "exits")  # loss.stage: everything trains, or only the exit modules (the two-stage recipe's second)
_SECTIONS = {"model": ModelSection, "data": DataSection, "loss": LossSection, "export": ExportSection}


def _section(name: str, cls: type, values: Any) -> Any:
    if not isinstance(values, dict):
        raise ValueError(f"config section {name!r} must be an object, got {type(values).__name__}")
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in section {name!r}; allowed: {allowed}")
    return cls(**values)


def parse_config(raw: dict[str, Any], root: str | Path = ".") -> TrainConfig:
    """Validate a config dict; errors name the section and the allowed keys or values."""
    allowed = ["launch", "training", *_SECTIONS]
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ValueError(f"unknown top-level key(s) {unknown}; allowed: {allowed}")
    sections = {name: _section(name, cls, raw.get(name, {})) for name, cls in _SECTIONS.items()}
    config = TrainConfig(
        launch=raw.get("launch", ""), training=dict(raw.get("training", {})), root=Path(root), **sections
    )
    if not config.model.base:
        raise ValueError("model.base is required: an ML-Embed folder or a backbone folder / Hub id to convert")
    if config.data.on_invalid not in ("error", "skip"):
        raise ValueError(f"data.on_invalid must be 'error' or 'skip', got {config.data.on_invalid!r}")
    if config.model.dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"model.dtype must be one of float32, bfloat16, float16, got {config.model.dtype!r}")
    if not isinstance(config.model.frozen_layers, int) or config.model.frozen_layers < 0:
        raise ValueError(f"model.frozen_layers must be an integer >= 0, got {config.model.frozen_layers!r}")
    if config.loss.kd_weight < 0 or (config.loss.kd_weight > 0) != bool(config.loss.teacher):
        raise ValueError("loss.kd_weight > 0 and loss.teacher go together (a teacher folder and its weight)")
    dims = config.loss.exit_dims
    if not isinstance(dims, dict) or not all(str(k).isdigit() and isinstance(v, list) for k, v in dims.items()):
        raise ValueError(
            f'loss.exit_dims must map exit layers (as strings) to lists of dims, e.g. {{"2": [96]}}, got {dims!r}'
        )
    if config.loss.stage not in STAGES:
        raise ValueError(f"loss.stage must be one of {list(STAGES)}, got {config.loss.stage!r}")
    if config.loss.stage == "exits" and config.model.frozen_layers:
        raise ValueError('loss.stage "exits" freezes the whole body already; leave model.frozen_layers at 0')
    if config.loss.self_distill < 0:
        raise ValueError(f"loss.self_distill must be >= 0, got {config.loss.self_distill}")
    for name in ("dim_weights", "exit_weights", "rank_weights"):
        values = getattr(config.loss, name)
        if not isinstance(values, dict) or not all(str(k).isdigit() and float(v) >= 0 for k, v in values.items()):
            raise ValueError(
                f'loss.{name} must map integers (as strings) to weights >= 0, e.g. {{"6": 2.0}}, got {values!r}'
            )
    if "output_dir" not in config.training:
        raise ValueError("training.output_dir is required (checkpoints and the final model go there)")
    return config


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a JSON recipe; `overrides` are `section.key=value` strings (value parsed as JSON, else a string)."""
    path = Path(path)
    raw = json.loads(path.read_text())
    return parse_config(apply_overrides(raw, overrides or []), root=path.parent)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"override {item!r} must look like section.key=value (e.g. training.max_steps=10)")
        section, _, name = key.partition(".")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        raw.setdefault(section, {})[name] = parsed
    return raw
