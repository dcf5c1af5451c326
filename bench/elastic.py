"""Inference cost of the elastic axes on the CPU, as ratios against baselines measured in the same run.

    python bench/elastic.py            # about 2-3 minutes on 2 cores
    python bench/elastic.py --quick    # fewer repeats, smaller batch (well under a minute of timing)

What it prints (eval mode, `torch.inference_mode`, threads fixed by `--threads`):
  (a) early exit: `layers=L/2` and `L/4` against the full depth, next to the ideal k/L (target: within 10%);
  (b) the full-setting model with a dense embedding against stock `transformers` `Qwen3Model` + last-token pooling
      + L2 normalisation on the same weights (target <= 1.03x), with the largest embedding difference;
  (c) efficiency mode (MEL factors U, V at rank r) against compatibility mode (dense E = U V);
  (d) the MEL lookup `U[ids] @ V`, forward + backward, against the reference code's `E = U @ V; E[ids]`
      at vocab 151,936, d 1024, r 512 and 18,432 tokens (target >= 5x);
  (e) peak memory of (d) measured in fresh subprocesses (see `bench/_util.py` for the method), and the parameter
      bytes of the efficiency against the compatibility model.
Cases of one comparison alternate round by round and report medians, so machine drift does not bias ratios.
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
from transformers import Qwen3Config, Qwen3Model  # noqa: E402

from configuration_mlembed import MLEmbedConfig  # noqa: E402
from modeling_mlembed import MLEmbedModel  # noqa: E402

LOOKUP_SHAPE = {"vocab": 151_936, "d": 1024, "r": 512, "tokens": 18_432}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="batch 8 x 64, fewer repeats")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vocab", type=int, default=151_936)
    p.add_argument("--rank", type=int, default=256, help="MEL rank r of the small model (hidden 512)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args()


def small_config(vocab: int) -> Qwen3Config:
    """Qwen3-shaped, 8 layers of hidden 512: big enough that matmuls dominate, small enough for 2 cores."""
    return Qwen3Config(
        hidden_size=512,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=64,
        intermediate_size=1536,
        vocab_size=vocab,
        pad_token_id=0,
        eos_token_id=1,
    )


def build_models(args: argparse.Namespace) -> tuple[MLEmbedModel, MLEmbedModel, Qwen3Model]:
    """Efficiency model (U, V), compatibility model (dense E = U V) and the stock backbone, all on the same weights."""
    torch.manual_seed(0)
    backbone = small_config(args.vocab)
    eff = MLEmbedModel(MLEmbedConfig.from_backbone(backbone, mel_rank=args.rank)).eval()
    compat = MLEmbedModel(MLEmbedConfig.from_backbone(backbone, mel_rank=None)).eval()
    state = eff.backbone.state_dict()
    with torch.no_grad():
        state["embed_tokens.weight"] = eff.mel.dense()
    compat.backbone.load_state_dict(state)
    stock = Qwen3Model(backbone).eval()
    stock.load_state_dict(state)
    return eff, compat, stock


def make_batch(batch: int, seq: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded random ids, lengths in [3/4 seq, seq], EOS last (as the tokenizer path builds them)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, vocab, (batch, seq), generator=g)  # (B, T)
    lengths = torch.randint(seq * 3 // 4, seq + 1, (batch,), generator=g)
    lengths[0] = seq
    mask = (torch.arange(seq) < lengths[:, None]).long()  # (B, T)
    ids[torch.arange(batch), lengths - 1] = 1
    return ids.masked_fill(mask == 0, 0), mask


def stock_embed(stock: Qwen3Model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What a user of stock transformers writes: last hidden state of the last real token, L2-normalised."""
    hidden = stock(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state  # (B, T, d)
    last = mask.sum(1) - 1  # (B,) right padding
    return F.normalize(hidden[torch.arange(ids.shape[0]), last], dim=-1)


# ------------------------------------------------------------------------------------------- MEL lookup (d, e)
def lookup_setup() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    s = LOOKUP_SHAPE
    g = torch.Generator().manual_seed(0)
    U = (torch.randn(s["vocab"], s["r"], generator=g) / s["r"] ** 0.5).requires_grad_()
    V = (torch.randn(s["r"], s["d"], generator=g) * 0.02).requires_grad_()
    ids = torch.randint(0, s["vocab"], (s["tokens"],), generator=g)
    grad_out = torch.randn(s["tokens"], s["d"], generator=g)
    return U, V, ids, grad_out


def lookup_mel(
    U: torch.Tensor, V: torch.Tensor, ids: torch.Tensor, grad_out: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Ours: gather the rows of U, then multiply by V. (N,) -> (N, r) -> (N, d)."""
    out = F.embedding(ids, U) @ V
    return torch.autograd.grad(out, (U, V), grad_out)


def lookup_materialise(
    U: torch.Tensor, V: torch.Tensor, ids: torch.Tensor, grad_out: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """The reference code: build E = U V (vocab, d) every step, then index it; backward through both."""
    out = (U @ V)[ids]
    return torch.autograd.grad(out, (U, V), grad_out)


def child(case: str) -> None:
    """Subprocess side of (e): one forward + backward of one lookup; prints a JSON line."""
    tensors = lookup_setup()
    fn = {"mel": lookup_mel, "materialise": lookup_materialise}[case]
    fn(*tensors)  # warm-up: one-time allocations of the kernels are not the step's
    print(json.dumps(step_peak_bytes(lambda: fn(*tensors))))


# -------------------------------------------------------------------------------------------------- main
def row(name: str, med: float, low: float, limit: float | None, absolute: str = "") -> list[str]:
    """A summary row; the status says which of the median and minimum ratios meet the limit."""
    if limit is None:
        status = "-"
    else:
        status = {(True, True): "ok", (True, False): "ok (median)", (False, True): "ok (min)"}.get(
            (med <= limit, low <= limit), "MISS"
        )
    return [name, f"{med:.3f}", f"{low:.3f}", "-" if limit is None else f"<= {limit:.3f}", absolute, status]


def param_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        return child(args.child)
    batch, seq, repeats, lookup_repeats = (8, 64, 3, 2) if args.quick else (16, 128, 9, 5)
    eff, compat, stock = build_models(args)
    cfg = eff.config
    L = cfg.num_hidden_layers
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, attention {cfg._attn_implementation}")
    print(
        f"model: Qwen3-shaped, hidden {cfg.hidden_size}, {L} layers, heads {cfg.num_attention_heads}/"
        f"{cfg.num_key_value_heads} (head_dim {cfg.head_dim}), FFN {cfg.intermediate_size}, vocab {cfg.vocab_size}, "
        f"MEL rank {cfg.mel_rank}; batch {batch} x {seq} tokens (right-padded); {repeats} interleaved rounds, medians"
    )
    ids, mask = make_batch(batch, seq, cfg.vocab_size)
    with torch.inference_mode():
        diff = (compat(ids, mask).embeddings - stock_embed(stock, ids, mask)).abs().max().item()
        diff_eff = (eff(ids, mask).embeddings - compat(ids, mask).embeddings).abs().max().item()
        t = median_times(
            {
                f"ML-Embed efficiency, layers={L}": lambda: eff(ids, mask),
                f"ML-Embed efficiency, layers={L // 2}": lambda: eff(ids, mask, layers=L // 2),
                f"ML-Embed efficiency, layers={L // 4}": lambda: eff(ids, mask, layers=L // 4),
                "ML-Embed compatibility (dense E)": lambda: compat(ids, mask),
                "stock Qwen3Model + pool + normalise": lambda: stock_embed(stock, ids, mask),
            },
            repeats,
        )
    print("\nforward times (median [min-max])")
    for name, stats in t.items():
        print(f"  {name:<40} {fmt_ms(stats)}")
    busy_warning(t)
    names, rows = list(t), []
    ms = lambda a, b: f"{t[a][0] * 1e3:.0f} / {t[b][0] * 1e3:.0f} ms"  # noqa: E731
    for k, name in ((L // 2, names[1]), (L // 4, names[2])):
        med, low = ratios(t, name, names[0])
        rows.append(
            row(f"(a) time layers={k} / layers={L} (ideal {k / L:.3f})", med, low, 1.1 * k / L, ms(name, names[0]))
        )
    rows.append(
        row("(b) time ML-Embed dense / stock Qwen3Model", *ratios(t, names[3], names[4]), 1.03, ms(names[3], names[4]))
    )
    print(
        f"  (b) max |embedding difference| ML-Embed compat vs stock: {diff:.2e}; efficiency vs compat: {diff_eff:.2e}"
    )
    rows.append(
        row(
            f"(c) time efficiency (r={cfg.mel_rank}) / compatibility",
            *ratios(t, names[0], names[3]),
            None,
            ms(names[0], names[3]),
        )
    )

    s = LOOKUP_SHAPE
    print(f"\n(d) MEL lookup fwd+bwd: vocab {s['vocab']}, d {s['d']}, r {s['r']}, {s['tokens']} tokens, fp32")
    tensors = lookup_setup()
    dU, dV = lookup_mel(*tensors)
    rU, rV = lookup_materialise(*tensors)
    print(f"  gradients agree: max |dU diff| {(dU - rU).abs().max():.1e}, max |dV diff| {(dV - rV).abs().max():.1e}")
    del dU, dV, rU, rV
    tl = median_times(
        {"mel": lambda: lookup_mel(*tensors), "materialise": lambda: lookup_materialise(*tensors)}, lookup_repeats
    )
    print(f"  ours  U[ids] @ V          {fmt_ms(tl['mel'])}")
    print(f"  ref   (U @ V)[ids]        {fmt_ms(tl['materialise'])}")
    busy_warning(tl)
    med, low = ratios(tl, "mel", "materialise")
    rows.append(
        row(
            "(d) time lookup fwd+bwd ours / ref",
            med,
            low,
            0.2,
            f"{tl['mel'][0] * 1e3:.0f} / {tl['materialise'][0] * 1e3:.0f} ms ({1 / med:.1f}x faster)",
        )
    )

    print("\n(e) peak memory of one lookup fwd+bwd above the live inputs (fresh subprocess each)")
    mem = {
        case: probe_in_subprocess(__file__, case, ["--threads", str(args.threads)]) for case in ("mel", "materialise")
    }
    for case, m in mem.items():
        print(
            f"  {case:<12} {m['extra_bytes'] / MiB:8.1f} MiB   (inputs live before: {m['before_bytes'] / MiB:.0f} "
            f"MiB process RSS; {m['method']})"
        )
    dense_mib = s["vocab"] * s["d"] * 4 / MiB
    print(f"  for scale: one dense vocab x d fp32 matrix is {dense_mib:.0f} MiB; dU alone is {dense_mib / 2:.0f} MiB")
    m_ours, m_ref = mem["mel"]["extra_bytes"], mem["materialise"]["extra_bytes"]
    rows.append(
        [
            "(e) lookup fwd+bwd peak extra memory, ours / ref",
            f"{m_ours / m_ref:.2f}",
            "",
            "< 1",
            f"{m_ours / MiB:.0f} / {m_ref / MiB:.0f} MiB",
            "ok" if m_ours < m_ref else "MISS",
        ]
    )
    pe, pc = param_bytes(eff), param_bytes(compat)
    print(f"  parameter bytes: efficiency {pe / MiB:.1f} MiB vs compatibility {pc / MiB:.1f} MiB (fp32)")
    rows.append(
        [
            "(e) parameter bytes, efficiency / compat",
            f"{pe / pc:.2f}",
            "",
            "< 1",
            f"{pe / MiB:.0f} / {pc / MiB:.0f} MiB",
            "ok" if pe < pc else "MISS",
        ]
    )

    print("\nsummary")
    print_table(["check", "ratio (median)", "ratio (min)", "target", "absolute", "status"], rows)


if __name__ == "__main__":
    main()
