"""One training step with the MEL lookup against the reference code's materialise-then-index, on the CPU.

    python bench/train_step.py            # about 2-3 minutes on 2 cores
    python bench/train_step.py --quick    # batch 8 x 64, fewer rounds

A Qwen3-shaped model of the 0.6B width (hidden 1024, heads 16/8, head_dim 128, FFN 3072, vocab 151,936, MEL rank
512) but only `--layers` (2) decoder layers, so a step fits the CPU. One step = forward with `exits=True`, an
in-batch contrastive loss (temperature 0.05) averaged over the exits, backward, AdamW. Two variants on the same
weights and batch:
  ours  `MLEmbedModel`: rows of U gathered, then times V[:k];
  ref   the reference code's path, `inputs_embeds = (U[:, :k] @ V[:k])[ids]`: the vocab x d product and its dense
        gradient at every step (a subclass overriding `embed_tokens`; the model file is unchanged).
It prints the step times (interleaved rounds, median and minimum), the peak memory of a step in fresh subprocesses
(method in `bench/_util.py`) and the trainable parameter counts of the real 0.6B shape, dense vs MEL, built on the
meta device. With 2 layers the embedding is a far larger share of the step than in the 28-layer model, so the
time ratio here is an upper bound; the milliseconds saved per step do not depend on the depth.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the remote-code modules, also from a plain checkout

from _util import MiB, busy_warning, fmt_ms, median_times, print_table, probe_in_subprocess, ratios, step_peak_bytes  # noqa: E402
from transformers import Qwen3Config  # noqa: E402

from configuration_mlembed import MLEmbedConfig  # noqa: E402
from modeling_mlembed import MLEmbedModel  # noqa: E402

VOCAB, RANK, TOKENIZER_ROWS = 151_936, 512, 151_669


class MaterialisingMLEmbedModel(MLEmbedModel):
    """The reference code's embedding path: build E = U[:, :k] V[:k] (vocab x d), then index it."""

    def embed_tokens(self, input_ids: torch.Tensor, rank: int | None = None) -> torch.Tensor:
        k = self.mel.rank if rank is None else rank
        return (self.mel.U[:, :k] @ self.mel.V[:k])[input_ids].to(self.dtype)  # (vocab, d) -> (B, T, d)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="batch 8 x 64, fewer rounds")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument(
        "--adamw",
        choices=("fused", "foreach", "for-loop"),
        default="fused",
        help="AdamW implementation; the unfused ones hold temporaries of twice the largest parameter (U)",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args()


def qwen3_06b(layers: int = 28) -> Qwen3Config:
    return Qwen3Config(
        hidden_size=1024,
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=3072,
        vocab_size=VOCAB,
        pad_token_id=0,
        eos_token_id=1,
    )


def build(variant: str, layers: int, adamw: str = "fused") -> tuple[MLEmbedModel, torch.optim.Optimizer]:
    """Model (same seed, hence the same weights for both variants) in train mode, and the recipe's AdamW."""
    torch.manual_seed(0)
    cls = {"ours": MLEmbedModel, "ref": MaterialisingMLEmbedModel}[variant]
    model = cls(MLEmbedConfig.from_backbone(qwen3_06b(layers), mel_rank=RANK)).train()
    impl = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}[adamw]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.98), weight_decay=0.01, **impl)
    return model, optimizer


def make_batch(quick: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries then their positives (B = 2P rows), right-padded random ids, EOS last."""
    batch, seq = (8, 64) if quick else (16, 128)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, VOCAB, (batch, seq), generator=g)  # (B, T)
    lengths = torch.randint(seq // 2, seq + 1, (batch,), generator=g)
    mask = (torch.arange(seq) < lengths[:, None]).long()  # (B, T)
    ids[torch.arange(batch), lengths - 1] = 1
    return ids.masked_fill(mask == 0, 0), mask


def contrastive_loss(exit_embeddings: dict[int, torch.Tensor], temperature: float = 0.05) -> torch.Tensor:
    """In-batch InfoNCE of query i against positive i, averaged over the exits. (B, d) per exit, B = 2P."""
    losses = []
    for emb in exit_embeddings.values():
        q, p = F.normalize(emb, dim=-1).chunk(2)  # (P, d) each
        logits = q @ p.T / temperature  # (P, P)
        losses.append(F.cross_entropy(logits, torch.arange(q.shape[0])))
    return torch.stack(losses).mean()


def forward_backward(model: MLEmbedModel, ids: torch.Tensor, mask: torch.Tensor) -> float:
    loss = contrastive_loss(model(ids, mask, exits=True).exit_embeddings)
    loss.backward()
    return loss.item()


def train_step(model: MLEmbedModel, optimizer: torch.optim.Optimizer, ids: torch.Tensor, mask: torch.Tensor) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = forward_backward(model, ids, mask)
    optimizer.step()
    return loss


def child(variant: str, args: argparse.Namespace) -> None:
    """Subprocess side: a warm-up step (AdamW state allocated), then the peaks of the phases of a steady-state step.

    Gradients are freed before each probe, so "before" is weights + AdamW state; the optimizer probe starts with the
    gradients live, as they are when `step()` runs.
    """
    model, optimizer = build(variant, args.layers, args.adamw)
    ids, mask = make_batch(args.quick)
    train_step(model, optimizer, ids, mask)
    optimizer.zero_grad(set_to_none=True)
    out = {"fwd+bwd": step_peak_bytes(lambda: forward_backward(model, ids, mask))}
    out["AdamW step (grads live)"] = step_peak_bytes(optimizer.step)
    optimizer.zero_grad(set_to_none=True)
    out["whole step"] = step_peak_bytes(lambda: train_step(model, optimizer, ids, mask))
    print(json.dumps(out))


def count_06b() -> list[list[str]]:
    """Trainable parameters of the real 0.6B shape (28 layers) with a dense embedding vs MEL, on the meta device."""
    rows, dense_total = [], None
    for rank in (None, 512, 256, 128):
        with torch.device("meta"):
            model = MLEmbedModel(MLEmbedConfig.from_backbone(qwen3_06b(), mel_rank=rank))
        total = sum(p.numel() for p in model.parameters() if p.requires_grad)
        emb = model.get_input_embeddings()
        emb_params = sum(p.numel() for p in emb.parameters())
        at_tokenizer = TOKENIZER_ROWS * 1024 if rank is None else TOKENIZER_ROWS * rank + rank * 1024
        dense_total = dense_total or total
        rows.append(
            [
                "dense" if rank is None else f"MEL r={rank}",
                f"{emb_params / 1e6:.1f}M",
                f"{at_tokenizer / 1e6:.1f}M",
                f"{total / 1e6:.1f}M",
                f"{total / dense_total:.3f}",
            ]
        )
    return rows


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        return child(args.child, args)
    repeats = 2 if args.quick else 4
    ids, mask = make_batch(args.quick)
    models = {v: build(v, args.layers, args.adamw) for v in ("ours", "ref")}
    cfg = models["ours"][0].config
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, attention {cfg._attn_implementation}")
    print(
        f"model: Qwen3-shaped, hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, heads "
        f"{cfg.num_attention_heads}/{cfg.num_key_value_heads} (head_dim {cfg.head_dim}), FFN {cfg.intermediate_size}, "
        f"vocab {cfg.vocab_size}, MEL rank {cfg.mel_rank} (step at full rank); exits {cfg.exit_layers}; "
        f"batch {ids.shape[0]} x {ids.shape[1]} ({int(mask.sum())} real tokens); fp32; AdamW ({args.adamw})"
    )

    grads = {}
    for v, (model, _) in models.items():  # same weights: the two paths must give the same loss and gradients
        model.zero_grad(set_to_none=True)
        loss = contrastive_loss(model(ids, mask, exits=True).exit_embeddings)
        loss.backward()
        grads[v] = (loss.item(), model.mel.U.grad.clone(), model.mel.V.grad.clone())
    (lo, uo, vo), (lr, ur, vr) = grads["ours"], grads["ref"]
    print(
        f"same loss and gradients: loss {lo:.6f} vs {lr:.6f}; max |dU diff| {(uo - ur).abs().max():.1e}, "
        f"max |dV diff| {(vo - vr).abs().max():.1e}"
    )
    del grads, uo, ur, vo, vr

    t = median_times({v: (lambda m=m, o=o: train_step(m, o, ids, mask)) for v, (m, o) in models.items()}, repeats)
    print(f"\nstep times ({repeats} interleaved rounds after a warm-up; median [min-max])")
    print(f"  ours  MEL lookup U[ids] @ V            {fmt_ms(t['ours'])}")
    print(f"  ref   materialise (U @ V)[ids]         {fmt_ms(t['ref'])}")
    busy_warning(t)
    med, low = ratios(t, "ref", "ours")
    saved = (t["ref"][0] - t["ours"][0]) * 1e3
    print(f"  speed-up ref / ours: {med:.2f}x (median), {low:.2f}x (min); saved per step {saved:.0f} ms")
    del models

    print("\npeak memory of a steady-state step above weights + AdamW state (fresh subprocess each)")
    child_args = ["--threads", str(args.threads), "--layers", str(args.layers), "--adamw", args.adamw]
    child_args += ["--quick"] if args.quick else []
    mem = {v: probe_in_subprocess(__file__, v, child_args) for v in ("ours", "ref")}
    for phase in mem["ours"]:
        o, r = mem["ours"][phase], mem["ref"][phase]
        print(
            f"  {phase:<24} ours {o['extra_bytes'] / MiB:7.1f} MiB   ref {r['extra_bytes'] / MiB:7.1f} MiB   "
            f"(process RSS before: {o['before_bytes'] / MiB:.0f} / {r['before_bytes'] / MiB:.0f} MiB)"
        )
    print(f"  method: {mem['ours']['whole step']['method']}")
    dense_mib = VOCAB * cfg.hidden_size * 4 / MiB
    print(
        f"  not counted above, the reference also keeps the dense embedding allocated (defect 2): +{dense_mib:.0f} "
        "MiB of fp32 weights"
    )

    print("\ntrainable parameters, Qwen3 0.6B shape (28 layers), built on the meta device")
    print_table(
        ["embedding", f"embedding params ({VOCAB} rows)", f"at {TOKENIZER_ROWS} rows", "model total", "total / dense"],
        count_06b(),
    )

    mem_rows = []
    for phase in ("fwd+bwd", "whole step"):
        m_ours, m_ref = mem["ours"][phase]["extra_bytes"], mem["ref"][phase]["extra_bytes"]
        mem_rows.append(
            [
                f"peak extra memory, {phase}",
                f"{m_ours / MiB:.0f} MiB",
                f"{m_ref / MiB:.0f} MiB",
                f"{m_ref / m_ours:.2f}x",
            ]
        )
    print("\nsummary")
    print_table(
        ["check", "ours", "ref", "ref / ours"],
        [
            ["step time, median", f"{t['ours'][0] * 1e3:.0f} ms", f"{t['ref'][0] * 1e3:.0f} ms", f"{med:.2f}x"],
            ["step time, min", f"{t['ours'][1] * 1e3:.0f} ms", f"{t['ref'][1] * 1e3:.0f} ms", f"{low:.2f}x"],
            *mem_rows,
        ],
    )


if __name__ == "__main__":
    main()
