"""vLLM serves an ML-Embed compat export: `dimensions=` returns our `encode(dim=)` vectors; throughput against ours.

    python bench/gpu_vllm.py                           # run by `bash bench/gpu.sh` (a few minutes on one H100 / H200)
    python bench/gpu_vllm.py --vllm-python /opt/vllm/bin/python
    python bench/gpu_vllm.py --tiny --device cpu --no-vllm   # the model, exports and our side only (a smoke run)

1. Builds a random Qwen3 of the 0.6B shape in code (28 layers, hidden 1024, 16 / 8 heads, FFN 3072, vocab 151,936,
   MEL rank 512; a character tokenizer, nothing downloaded), saves it as an ML-Embed folder and writes compat exports
   (`mlembed.export.compat.export_compat`) of two (layers, rank) settings: the full model and layers=14 + rank=256.
2. Encodes the texts with our model on the GPU (bf16, sdpa) at each setting with dim=256 and the full size, queries
   with the query prompt.
3. Starts `vllm serve <compat export> --runner pooling --dtype bfloat16` with the Python of `--vllm-python` (or
   this one when it imports vllm; vLLM is best kept in its own environment, it pins its own torch), posts
   `/v1/embeddings` with `dimensions=` (the query prompt prepended by the client: vLLM applies no prompts) and
   compares: the largest difference and the smallest cosine to ours (bf16 tolerance: cosine >= 0.99); random
   weights make all texts' vectors alike (their mean cosine is printed), so it also reports the cosine after removing
   our mean vector, next to the same number for our own bf16 against fp32 (the noise floor), and how often each vLLM
   vector is nearest to our vector of the same text; and checks that a dimension outside `matryoshka_dimensions` is
   refused with a 400. PASS: cosine >= 0.99 everywhere and the 400.
4. Throughput on the same GPU: the same texts through vLLM (requests of 64 inputs, 8 in flight) against our
   `encode` (batch 64), one after the other.
Without vLLM the script says so and exits 0 after step 2 (the device machine cannot download it; bring it as an
environment, see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the remote-code modules, also from a plain checkout

from configuration_mlembed import MLEmbedConfig  # noqa: E402
from mlembed.export.compat import export_compat  # noqa: E402
from mlembed.export.convert import save_folder  # noqa: E402
from modeling_mlembed import MLEmbedModel  # noqa: E402

SHAPE_06B = dict(
    hidden_size=1024,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    intermediate_size=3072,
    vocab_size=151_936,
    max_position_embeddings=32_768,
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
    tie_word_embeddings=True,
)
SHAPE_TINY = dict(SHAPE_06B, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=16, intermediate_size=128, vocab_size=1000)  # fmt: skip
WORDS = "the package installs a service that manages files and network settings for many languages".split()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/gpu_vllm"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--vllm-python", default=None, help="a Python whose environment has vLLM (default: this one)")
    p.add_argument("--no-vllm", action="store_true", help="stop after our side (no vLLM)")
    p.add_argument("--tiny", action="store_true", help="a tiny model instead of the 0.6B shape (smoke run)")
    p.add_argument("--texts", type=int, default=4096, help="texts for the throughput comparison")
    p.add_argument("--port", type=int, default=8011)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args()


def char_tokenizer(vocab_size: int):
    """A character-level fast tokenizer (EOS, PAD), saved as `PreTrainedTokenizerFast` so that engines on
    transformers 4 and 5 load it alike."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens = ["<pad>", "<eos>", "<unk>"] + [c for c in string.printable if not c.isspace() or c == " "]
    assert len(tokens) <= vocab_size
    backend = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


def build_source(work: Path, tiny: bool) -> Path:
    from transformers import Qwen3Config

    shape = SHAPE_TINY if tiny else SHAPE_06B
    backbone = Qwen3Config(**shape, pad_token_id=0, eos_token_id=1, bos_token_id=None)
    config = MLEmbedConfig.from_backbone(backbone, mel_rank=64 if tiny else 512, exit_layers=None)
    torch.manual_seed(0)
    model = MLEmbedModel(config).to(torch.bfloat16)
    return save_folder(model, work / "ml", char_tokenizer(shape["vocab_size"]))


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(6, 48))) for _ in range(n)]


def for_engines_on_transformers_4(folder: Path) -> None:
    """transformers 5 names this tokenizer class `TokenizersBackend`, unknown to transformers 4."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2))


def vllm_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment of the vLLM process: its own (no PYTHONPATH of ours) when it has its own Python."""
    env = dict(os.environ)
    if args.vllm_python:
        env.pop("PYTHONPATH", None)
    return env


def vllm_python(args: argparse.Namespace) -> str | None:
    candidates = [args.vllm_python] if args.vllm_python else [sys.executable, shutil.which("python3")]
    for python in filter(None, candidates):
        found = subprocess.run([python, "-c", "import vllm"], capture_output=True, env=vllm_env(args))
        if found.returncode == 0:
            return python
    return None


def post(port: int, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/embeddings",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def serve(python: str, folder: Path, port: int, log: Path, env: dict[str, str]) -> subprocess.Popen:
    cli = "import sys; from vllm.entrypoints.cli.main import main; sys.argv[0] = 'vllm'; sys.exit(main())"
    command = [python, "-c", cli, "serve", str(folder), "--runner", "pooling",
               "--dtype", "bfloat16", "--port", str(port), "--max-model-len", "512",
               "--gpu-memory-utilization", "0.4", "--served-model-name", "mlembed"]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True, env=env
    )
    deadline = time.time() + 600
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {process.returncode}; see {log}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return process
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(3)
    stop(process)
    raise RuntimeError(f"vllm serve did not become healthy in 10 minutes; see {log}")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)  # the server and the engine process it started
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def vllm_embed(port: int, texts: list[str], dimensions: int | None, batch: int = 64, in_flight: int = 8):
    def one(chunk: list[str]) -> list[list[float]]:
        payload = {"model": "mlembed", "input": chunk} | ({"dimensions": dimensions} if dimensions else {})
        status, body = post(port, payload)
        if status != 200:
            raise RuntimeError(f"vLLM answered {status}: {body}")
        return [item["embedding"] for item in sorted(body["data"], key=lambda item: item["index"])]

    chunks = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    with ThreadPoolExecutor(in_flight) as pool:
        return np.array([row for rows in pool.map(one, chunks) for row in rows], dtype=np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine. (N, d), (N, d) -> (N,)."""
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def centred_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine after removing b's mean vector (what differs between texts). (N, d), (N, d) -> (N,)."""
    return cosine(a - b.mean(0), b - b.mean(0))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    src = build_source(args.work, args.tiny)
    model = MLEmbedModel.from_pretrained(src, dtype=torch.bfloat16).to(args.device).eval()
    exact = MLEmbedModel.from_pretrained(src, dtype=torch.float32).to(args.device).eval()  # the bf16 noise floor
    cfg = model.config
    half = max(l for l in cfg.exit_layers if l <= cfg.num_hidden_layers // 2)  # a trained exit (16 of 28)
    rank_half = cfg.mel_ranks[-2] if len(cfg.mel_ranks) > 1 else cfg.mel_rank  # a trained rank (256 of 512)
    settings = {"full": (None, None), f"layers={half} rank={rank_half}": (half, rank_half)}
    prompt = cfg.prompts["query"]
    dim = 256 if cfg.hidden_size > 256 else cfg.hidden_size // 2  # a trained Matryoshka dim below the full size
    check_texts, speed_texts = make_texts(64, seed=1), make_texts(args.texts, seed=2)
    results: dict = {"shape": "tiny" if args.tiny else "0.6B", "settings": {}}
    python = None if args.no_vllm else vllm_python(args)
    for name, (layers, rank) in settings.items():
        folder = export_compat(src, args.work / name.replace(" ", "_").replace("=", ""), layers=layers, rank=rank)
        for_engines_on_transformers_4(folder)
        ours = {d: model.encode(check_texts, layers=layers, rank=rank, dim=d, prompt_name="query", batch_size=64)
                for d in (dim, None)}  # fmt: skip
        sync(args.device)
        start = time.perf_counter()
        model.encode(speed_texts, layers=layers, rank=rank, batch_size=64)
        sync(args.device)
        row = {"ours_texts_per_s": len(speed_texts) / (time.perf_counter() - start)}
        mean_pair = float((ours[None] @ ours[None].T)[np.triu_indices(len(check_texts), 1)].mean())
        row["mean_cosine_between_texts"] = mean_pair
        fp32 = exact.encode(check_texts, layers=layers, rank=rank, prompt_name="query", batch_size=64)
        row["ours_bf16_vs_fp32_min_centred_cosine"] = float(centred_cosine(ours[None], fp32).min())
        if python is None:
            results["settings"][name] = row
            continue
        process = serve(python, folder, args.port, args.work / f"vllm-{name.replace(' ', '_')}.log", vllm_env(args))
        try:
            for dims in (dim, None):
                theirs = vllm_embed(args.port, [prompt + t for t in check_texts], dims)
                nearest = (theirs @ ours[dims].T).argmax(1)
                row[f"dim={dims or cfg.hidden_size}"] = {
                    "shape": list(theirs.shape),
                    "max_abs_diff": float(np.abs(theirs - ours[dims]).max()),
                    "min_cosine": float(cosine(theirs, ours[dims]).min()),
                    "min_centred_cosine": float(centred_cosine(theirs, ours[dims]).min()),
                    "nearest_is_same_text": float((nearest == np.arange(len(nearest))).mean()),
                    "norm": float(np.linalg.norm(theirs, axis=1).mean()),
                }
            status, _ = post(args.port, {"model": "mlembed", "input": ["x"], "dimensions": dim + 1})  # not listed
            row["untrained_dimensions_refused"] = status == 400
            vllm_embed(args.port, speed_texts[:256], None)  # warm-up
            start = time.perf_counter()
            vllm_embed(args.port, speed_texts, None)
            row["vllm_texts_per_s"] = len(speed_texts) / (time.perf_counter() - start)
            row["vllm_over_ours"] = row["vllm_texts_per_s"] / row["ours_texts_per_s"]
        finally:
            stop(process)
        results["settings"][name] = row
    print(json.dumps(results, indent=2))
    if python is None:
        print("vLLM: not available here (no --vllm-python and `import vllm` fails): its checks were SKIPPED")
    else:
        ok = all(
            r[key]["min_cosine"] >= 0.99 and r["untrained_dimensions_refused"]
            for r in results["settings"].values()
            for key in r
            if key.startswith("dim=")
        )
        print("vLLM check:", "PASS" if ok else "FAIL")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
