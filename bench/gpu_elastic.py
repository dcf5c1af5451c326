"""The elastic axes on one GPU at the real 0.6B shape, as ratios against baselines measured in the same run.

    python bench/gpu_elastic.py              # about a minute on one H100 / H200

A Qwen3-0.6B-shaped model (28 layers, hidden 1024, vocab 151,936, MEL rank 512; random weights, bf16, sdpa).
Batch `--batch` x `--seq` tokens (right-padded, lengths 3/4 to 1 of seq). Cases of one table alternate round by
round and report medians of `--repeats` rounds (each case synchronises the GPU before its clock stops):
  (a) embedding forward at layers = 28 / 14 / 7 against the full depth, next to the ideal k/28; the full setting
      against stock `Qwen3Model` + last-token pooling + L2 on the same weights (dense E = U V), with the largest
      embedding difference;
  (b) one training step (forward with every exit, in-batch InfoNCE over the exits, backward, fused AdamW) with the
      MEL lookup against the reference code's `(U[:, :k] @ V[:k])[ids]`, peak memory of each;
  (c) the MEL lookup alone, forward + backward, at 18,432 tokens, against materialise-then-index.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _util import fmt_ms, median_times  # noqa: E402
from elastic import lookup_materialise, lookup_mel, lookup_setup, make_batch, stock_embed  # noqa: E402
from train_step import VOCAB, MaterialisingMLEmbedModel, qwen3_06b  # noqa: E402
from transformers import Qwen3Model  # noqa: E402

from configuration_mlembed import MLEmbedConfig  # noqa: E402
from modeling_mlembed import MLEmbedModel  # noqa: E402

RANK, LAYERS = 512, 28  # the 0.6B shape (train_step.qwen3_06b); sdpa, the transformers default


def synced(fn):
    def call():
        out = fn()
        torch.cuda.synchronize()
        return out

    return call


def inference(args: argparse.Namespace, ids: torch.Tensor, mask: torch.Tensor) -> None:
    torch.manual_seed(0)
    config = MLEmbedConfig.from_backbone(qwen3_06b(), mel_rank=RANK)
    model = MLEmbedModel(config).to("cuda", torch.bfloat16).eval()
    stock = Qwen3Model(qwen3_06b()).to("cuda", torch.bfloat16).eval()
    state = model.backbone.state_dict()
    with torch.no_grad():
        state["embed_tokens.weight"] = model.mel.dense()
    stock.load_state_dict(state)
    cases = {
        f"layers={k}": synced(lambda k=k: model(input_ids=ids, attention_mask=mask, layers=k).embeddings)
        for k in (LAYERS, LAYERS // 2, LAYERS // 4)
    }
    cases["stock Qwen3Model"] = synced(lambda: stock_embed(stock, ids, mask))
    with torch.inference_mode():
        diff = (cases[f"layers={LAYERS}"]().float() - cases["stock Qwen3Model"]().float()).abs().max().item()
        t = median_times(cases, args.repeats, warmup=3)
    full = t[f"layers={LAYERS}"][0]
    print(f"\n(a) embedding forward, batch {ids.shape[0]} x {ids.shape[1]}, bf16")
    for name, stats in t.items():
        ideal = f"(ideal {int(name.split('=')[1]) / LAYERS:.2f})" if name.startswith("layers") else ""
        print(f"  {name:18} {fmt_ms(stats)}   x full {stats[0] / full:5.2f} {ideal}")
    print(f"  full setting vs stock: {full / t['stock Qwen3Model'][0]:.2f}x time, max |diff| {diff:.2e} (bf16)")


def train_steps(args: argparse.Namespace, ids: torch.Tensor, mask: torch.Tensor) -> None:
    torch.manual_seed(0)
    exits = [1, 2, 4, 8, 16, 24, LAYERS]
    results = {}
    half = ids.shape[0] // 2  # queries = first half, positives = second half
    for name, cls in (("MEL lookup", MLEmbedModel), ("materialise", MaterialisingMLEmbedModel)):
        config = MLEmbedConfig.from_backbone(qwen3_06b(), mel_rank=RANK, exit_layers=exits)
        model = cls(config).to("cuda", torch.bfloat16).train()
        model.gradient_checkpointing_enable()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

        def step(model=model, optimizer=optimizer):
            out = model(input_ids=ids, attention_mask=mask, exits=True, rank=RANK)
            loss = 0.0
            for emb in out.exit_embeddings.values():
                q, p = F.normalize(emb[:half].float(), dim=-1), F.normalize(emb[half:].float(), dim=-1)
                loss = loss + F.cross_entropy(q @ p.T / 0.05, torch.arange(half, device="cuda"))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        results[name] = (
            median_times({name: synced(step)}, args.repeats // 2, warmup=1)[name],
            torch.cuda.max_memory_allocated() / 2**30,
        )
        del model, optimizer
        torch.cuda.empty_cache()
    (mel, mel_mem), (ref, ref_mem) = results["MEL lookup"], results["materialise"]
    print(f"\n(b) training step, 0.6B shape, {len(exits)} exits, gradient checkpointing, fused AdamW, bf16")
    for name, (stats, mem) in results.items():
        print(f"  {name:18} {fmt_ms(stats)}   peak {mem:6.2f} GiB")
    print(f"  materialise / MEL lookup: {ref[0] / mel[0]:.2f}x time, {ref_mem / mel_mem:.2f}x peak memory")


def lookup(args: argparse.Namespace) -> None:
    U, V, ids, grad = (x.cuda() for x in lookup_setup())
    U, V = U.detach().requires_grad_(), V.detach().requires_grad_()
    t = median_times(
        {
            "MEL lookup": synced(lambda: lookup_mel(U, V, ids, grad)),
            "materialise": synced(lambda: lookup_materialise(U, V, ids, grad)),
        },
        args.repeats,
        warmup=3,
    )
    print("\n(c) embedding lookup forward + backward, vocab 151,936, d 1024, r 512, 18,432 tokens, fp32")
    for name, stats in t.items():
        print(f"  {name:18} {fmt_ms(stats)}")
    print(f"  materialise / MEL lookup: {t['materialise'][0] / t['MEL lookup'][0]:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu_elastic.py needs a CUDA GPU (bench/elastic.py is the CPU version)")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    ids, mask = (x.cuda() for x in make_batch(args.batch, args.seq, VOCAB))
    inference(args, ids, mask)
    train_steps(args, ids[:16], mask[:16])
    lookup(args)


if __name__ == "__main__":
    main()
