"""3D-ML losses against straightforward numpy loops, on random tensors and on a tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model

from mlembed.distributed import shared_choice
from mlembed.losses import (
    ThreeDObjective,
    distill_mse,
    hard_negative_infonce,
    in_batch_infonce,
    mrl_weights,
    passage_ids_from_tokens,
    sample_mel_rank,
    score_distill_kl,
    split_columns,
    stack_columns,
    three_d_loss,
)
from mlembed.losses.columns import embed_by_side, side_batches

T = 0.05


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def np_unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def np_ce(logits: list[float], label: int) -> float:
    """-log softmax(logits)[label], candidates given as a plain list."""
    logits = np.asarray(logits, dtype=np.float64)
    top = logits.max()
    return float(-(logits[label] - top - np.log(np.exp(logits - top).sum())))


def ref_hard(q: np.ndarray, p: np.ndarray, negs: np.ndarray, t: float = T) -> float:
    losses = []
    for i in range(len(q)):
        logits = [q[i] @ p[i] / t] + [q[i] @ n / t for n in negs[i]]
        losses.append(np_ce(logits, 0))
    return float(np.mean(losses))


def ref_in_batch(q: np.ndarray, p: np.ndarray, ids: list[int] | None = None, t: float = T) -> float:
    losses = []
    for i in range(len(q)):
        keep = [j for j in range(len(p)) if j == i or ids is None or ids[j] != ids[i]]
        logits = [q[i] @ p[j] / t for j in keep]
        losses.append(np_ce(logits, keep.index(i)))
    return float(np.mean(losses))


# ------------------------------------------------------------------------------------------- contrastive
def test_hard_negative_matches_loop():
    q, p, negs = unit(5, 16, seed=1), unit(5, 16, seed=2), unit(5, 7, 16, seed=3)
    got = hard_negative_infonce(q, p, negs, temperature=T)
    assert got.item() == pytest.approx(ref_hard(q.numpy(), p.numpy(), negs.numpy()), rel=1e-10)


def test_in_batch_matches_loop():
    q, p = unit(6, 16, seed=4), unit(6, 16, seed=5)
    got = in_batch_infonce(q, p, temperature=0.1)
    assert got.item() == pytest.approx(ref_in_batch(q.numpy(), p.numpy(), t=0.1), rel=1e-10)


def test_duplicate_passages_are_masked():
    q, p = unit(5, 8, seed=6), unit(5, 8, seed=7)
    p[3] = p[1]  # the same passage is the positive of queries 1 and 3
    ids = torch.tensor([10, 11, 12, 11, 14])
    masked = in_batch_infonce(q, p, passage_ids=ids)
    assert masked.item() == pytest.approx(ref_in_batch(q.numpy(), p.numpy(), ids.tolist()), rel=1e-10)
    assert masked.item() != pytest.approx(in_batch_infonce(q, p).item(), rel=1e-6)  # default: no masking
    q.requires_grad_(True)
    in_batch_infonce(q, p, passage_ids=ids).backward()
    # query 1 no longer sees passage 3 (= its own positive) as a negative: only i = 1, 3 change
    unmasked = torch.autograd.grad(in_batch_infonce(q, p), q)[0]
    changed = (q.grad - unmasked).abs().sum(-1) > 1e-12
    assert changed.tolist() == [False, True, False, True, False]


def test_passage_ids_from_tokens_ignore_padding_and_are_stable():
    ids = torch.tensor([[5, 6, 7, 0], [5, 6, 0, 0], [0, 5, 6, 7], [5, 6, 7, 8]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 1, 1, 1], [1, 1, 1, 1]])
    got = passage_ids_from_tokens(ids, mask)
    assert got.dtype == torch.long and got.shape == (4,)
    assert got[0] == got[2]  # the same tokens, right or left padded
    assert len(set(got.tolist())) == 3
    assert got.tolist() == passage_ids_from_tokens(ids.clone(), mask.clone()).tolist()


def test_contrastive_errors():
    q, p = unit(4, 8), unit(4, 8, seed=1)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        hard_negative_infonce(q, p, unit(4, 2, 8), temperature=0)
    with pytest.raises(ValueError, match="q and p must both be"):
        in_batch_infonce(q, p[:3])
    with pytest.raises(ValueError, match=r"negs must be \(B, N, d\)"):
        hard_negative_infonce(q, p, unit(4, 8))
    with pytest.raises(ValueError, match="passage_ids must be an integer tensor of shape"):
        in_batch_infonce(q, p, passage_ids=torch.zeros(4))
    with pytest.raises(ValueError, match="passage_ids must be an integer tensor of shape"):
        in_batch_infonce(q, p, passage_ids=torch.zeros(3, dtype=torch.long))


# -------------------------------------------------------------------------------------------- matryoshka
def test_mrl_weights_match_reference_numbers():
    dims = [8, 16, 32, 64, 128, 256, 512, 1024]
    weights = mrl_weights(dims, 1024)
    assert list(weights) == sorted(dims, reverse=True)
    published = [1, 0.354, 0.167, 0.088, 0.050, 0.030, 0.018, 0.011]  # the paper's weights for d=1024, rounded
    assert list(weights.values()) == pytest.approx(published, abs=6e-4)
    assert weights[256] == pytest.approx(1 / (3 * 2))  # n = 3, sqrt(1024 / 256) = 2


def test_mrl_weights_errors():
    with pytest.raises(ValueError, match="dims must be a non-empty list of positive integers"):
        mrl_weights([])
    with pytest.raises(ValueError, match="dims must be unique"):
        mrl_weights([8, 8])
    with pytest.raises(ValueError, match=r"dims must lie in 1..full_dim=16"):
        mrl_weights([8, 32], full_dim=16)


def test_mel_rank_frequencies():
    ranks, generator, draws = [64, 128, 256, 512], torch.Generator().manual_seed(0), 20000
    counts = {k: 0 for k in ranks}
    for _ in range(draws):
        counts[sample_mel_rank(ranks, generator)] += 1
    for k in ranks:
        assert counts[k] / draws == pytest.approx(k / sum(ranks), abs=0.01)


def test_mel_rank_frequencies_follow_the_rank_weights():
    ranks, generator, draws = [64, 128, 256, 512], torch.Generator().manual_seed(0), 20000
    weights = {64: 3.0, 128: 1.0, 256: 0.0, 512: 1.0}
    counts = {k: 0 for k in ranks}
    for _ in range(draws):
        counts[sample_mel_rank(ranks, generator, weights)] += 1
    for k in ranks:
        assert counts[k] / draws == pytest.approx(weights[k] / 5.0, abs=0.01)


def test_sampling_errors():
    with pytest.raises(ValueError, match="ranks must be a non-empty list of positive integers"):
        sample_mel_rank([0, 64])
    for weights in ({64: 1.0}, {64: 1.0, 128: 1.0, 96: 1.0}, {64: -1.0, 128: 1.0}, {64: 0.0, 128: 0.0}):
        with pytest.raises(ValueError, match=r"every trained MEL rank \[64, 128\] a weight >= 0"):
            sample_mel_rank([64, 128], weights=weights)
    with pytest.raises(ValueError, match="options must not be empty"):
        shared_choice([])
    with pytest.raises(ValueError, match="weights must have one entry per option"):
        shared_choice(["a", "b"], weights=[1.0])
    with pytest.raises(ValueError, match="weights must be finite, non-negative and not all zero"):
        shared_choice(["a", "b"], weights=[0.0, 0.0])


def random_exits(batch: int = 4, width: int = 16, negatives: int = 3, layers=(1, 2, 4), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    make = lambda *shape: {l: torch.randn(*shape, generator=g, dtype=torch.float64) for l in layers}  # noqa: E731
    return make(batch, width), make(batch, width), make(batch, negatives, width)


def ref_three_d(q, p, negs, dims, in_batch=True, hard=True, ids=None, teacher=None, kd_weight=0.0) -> float:
    """Nested loop: exits x dims, weights 1 / (n sqrt(d / d')) computed here, mean over exits."""
    width, total = next(iter(q.values())).shape[1], 0.0
    for layer in q:
        ql, pl, nl = q[layer].numpy(), p[layer].numpy(), negs[layer].numpy()
        for n, dim in enumerate(sorted(dims, reverse=True), start=1):
            weight = 1.0 / (n * math.sqrt(width / dim))
            qd, pd, nd = np_unit(ql[:, :dim]), np_unit(pl[:, :dim]), np_unit(nl[..., :dim])
            total += weight * (
                (ref_in_batch(qd, pd, ids) if in_batch else 0.0) + (ref_hard(qd, pd, nd) if hard else 0.0)
            )
        if teacher is not None:
            mse = [np.mean((s - t.numpy()[..., :width]) ** 2) for s, t in zip((ql, pl, nl), teacher)]
            total += kd_weight * sum(mse)
    return total / len(q)


@pytest.mark.parametrize("in_batch, hard", [(True, True), (True, False), (False, True)])
def test_three_d_loss_matches_nested_loop(in_batch, hard):
    q, p, negs = random_exits()
    total, parts = three_d_loss(q, p, [16, 8, 4], exit_negs=negs, use_in_batch=in_batch, use_hard_negatives=hard)
    assert total.item() == pytest.approx(ref_three_d(q, p, negs, [16, 8, 4], in_batch, hard), rel=1e-10)
    kinds = (["in_batch"] if in_batch else []) + (["hard_negative"] if hard else [])
    assert sorted(parts) == sorted(f"exit{l}/dim{d}/{k}" for l in (1, 2, 4) for d in (16, 8, 4) for k in kinds)


def test_three_d_loss_flat_negatives_ids_and_teacher():
    q, p, negs = random_exits()
    ids = torch.tensor([7, 8, 7, 9])
    teacher = (
        torch.randn(4, 24, dtype=torch.float64),
        torch.randn(4, 24, dtype=torch.float64),
        torch.randn(4, 3, 24, dtype=torch.float64),
    )
    flat = {l: n.reshape(12, 16) for l, n in negs.items()}  # (B * N, d), query-major
    flat_teacher = (teacher[0], teacher[1], teacher[2].reshape(12, 24))
    total, parts = three_d_loss(
        q, p, [16, 8], exit_negs=flat, passage_ids=ids, teacher_embeddings=flat_teacher, kd_weight=0.3
    )
    expected = ref_three_d(q, p, negs, [16, 8], ids=ids.tolist(), teacher=teacher, kd_weight=0.3)
    assert total.item() == pytest.approx(expected, rel=1e-10)
    assert "exit2/kd" in parts


def test_ablations_are_subsets():
    q, p, negs = random_exits()
    total, parts = three_d_loss(q, p, [16], exit_negs=negs, exits=[4])  # MRL off, MLL off
    only = {4: q[4]}, {4: p[4]}, {4: negs[4]}
    assert total.item() == pytest.approx(ref_three_d(*only, [16]), rel=1e-10)
    assert sorted(parts) == ["exit4/dim16/hard_negative", "exit4/dim16/in_batch"]


def test_three_d_loss_bf16_is_computed_in_fp32():
    q, p, negs = random_exits()
    half = [{l: t.to(torch.bfloat16) for l, t in d.items()} for d in (q, p, negs)]
    total, _ = three_d_loss(half[0], half[1], [16, 8], exit_negs=half[2])
    back = [{l: t.double() for l, t in d.items()} for d in half]  # the same bf16 values, computed exactly
    assert total.dtype == torch.float32
    assert total.item() == pytest.approx(ref_three_d(*back, [16, 8]), rel=1e-5)


def test_three_d_loss_errors():
    q, p, negs = random_exits()
    with pytest.raises(ValueError, match="nothing to compute"):
        three_d_loss(q, p, [16], use_in_batch=False, use_hard_negatives=False)
    with pytest.raises(ValueError, match="use_hard_negatives=True needs exit_negs"):
        three_d_loss(q, p, [16])
    with pytest.raises(ValueError, match="temperature must be > 0 and kd_weight, self_distill >= 0"):
        three_d_loss(q, p, [16], exit_negs=negs, temperature=-1)
    with pytest.raises(ValueError, match="exit_q is empty"):
        three_d_loss({}, {}, [16], use_hard_negatives=False)
    with pytest.raises(ValueError, match="must have the same exit layers"):
        three_d_loss(q, {1: p[1]}, [16], exit_negs=negs)
    with pytest.raises(ValueError, match=r"exits must be a non-empty subset of the exit layers given \[1, 2, 4\]"):
        three_d_loss(q, p, [16], exit_negs=negs, exits=[3])
    with pytest.raises(ValueError, match=r"dims must be a non-empty list of integers in 1..16"):
        three_d_loss(q, p, [32], exit_negs=negs)
    with pytest.raises(ValueError, match="weights must give a weight for every dim"):
        three_d_loss(q, p, [16, 8], exit_negs=negs, weights={16: 1.0})
    with pytest.raises(ValueError, match=r"negatives must be \(B, N, d\) or \(B \* N, d\)"):
        three_d_loss(q, p, [16], exit_negs={l: n[:, :, :8] for l, n in negs.items()})
    with pytest.raises(ValueError, match="exit 2: queries and positives must be"):
        three_d_loss(q, {**p, 2: p[2][:3]}, [16], exit_negs=negs)
    with pytest.raises(ValueError, match="teacher_embeddings must be a tuple"):
        three_d_loss(q, p, [16], exit_negs=negs, teacher_embeddings=(q[1],), kd_weight=1.0)


def np_kl_rows(teacher: np.ndarray, student: np.ndarray, keep: np.ndarray | None = None) -> float:
    """mean_i KL(softmax(teacher_i) || softmax(student_i)) over the kept candidates, a plain loop."""
    values = []
    for i in range(len(teacher)):
        cols = [j for j in range(teacher.shape[1]) if keep is None or keep[i, j]]
        t, s = teacher[i, cols], student[i, cols]
        log_t, log_s = t - t.max() - np.log(np.exp(t - t.max()).sum()), s - s.max() - np.log(np.exp(s - s.max()).sum())
        values.append(float((np.exp(log_t) * (log_t - log_s)).sum()))
    return float(np.mean(values))


def ref_self_distill(q, p, negs, dims, teacher=None, ids=None) -> float:
    """Every (exit, dim) scores [in-batch positives; own negatives]; KL from the teacher's scores at full width.

    The teacher is the deepest exit at full width (then not its own student) unless `teacher` = (q, p, negs)."""
    layers, width = sorted(q), next(iter(q.values())).shape[1]
    tq, tp, tn = (q[layers[-1]], p[layers[-1]], negs[layers[-1]]) if teacher is None else teacher
    tq, tp, tn = (np_unit(x.numpy()) for x in (tq, tp, tn))
    t_logits = np.concatenate([tq @ tp.T, np.einsum("bd,bnd->bn", tq, tn)], axis=1) / T
    keep = np.ones_like(t_logits, dtype=bool)
    if ids is not None:
        for i in range(len(ids)):
            for j in range(len(ids)):
                keep[i, j] = i == j or ids[i] != ids[j]
    values = []
    for layer in layers:
        for dim in dims:
            if teacher is None and layer == layers[-1] and dim == width:
                continue
            sq, sp = np_unit(q[layer].numpy()[:, :dim]), np_unit(p[layer].numpy()[:, :dim])
            sn = np_unit(negs[layer].numpy()[..., :dim])
            s_logits = np.concatenate([sq @ sp.T, np.einsum("bd,bnd->bn", sq, sn)], axis=1) / T
            values.append(np_kl_rows(t_logits, s_logits, keep))
    return float(np.mean(values))


def test_exit_weights_weigh_the_exits():
    q, p, negs = random_exits()
    weights = {1: 0.5, 2: 1.0, 4: 3.0}
    total, _ = three_d_loss(q, p, [16, 8], exit_negs=negs, exit_weights={1: 0.5, 4: 3.0})  # exit 2: default 1
    per_exit = {l: ref_three_d({l: q[l]}, {l: p[l]}, {l: negs[l]}, [16, 8]) for l in q}
    expected = sum(weights[l] * per_exit[l] for l in q) / sum(weights.values())
    assert total.item() == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match=r"exit_weights name exits \[3\] outside the exits used \[1, 2, 4\]"):
        three_d_loss(q, p, [16], exit_negs=negs, exit_weights={3: 1.0})
    with pytest.raises(ValueError, match="exit_weights must be finite, >= 0 and not all 0"):
        three_d_loss(q, p, [16], exit_negs=negs, exit_weights={1: 0.0, 2: 0.0, 4: 0.0})


@pytest.mark.parametrize("own_teacher", [True, False])
def test_self_distillation_matches_a_plain_loop(own_teacher):
    q, p, negs = random_exits()
    ids = torch.tensor([7, 8, 7, 9])  # rows 0 and 2 share their positive: out of both distributions
    teacher = None
    if not own_teacher:
        _, _, more = random_exits(seed=5)
        teacher = (torch.randn(4, 16, dtype=torch.float64), torch.randn(4, 16, dtype=torch.float64), more[1])
    total, parts = three_d_loss(
        q, p, [16, 8], exit_negs=negs, passage_ids=ids, self_distill=0.7, self_teacher_embeddings=teacher
    )
    main = ref_three_d(q, p, negs, [16, 8], ids=ids.tolist())
    kd = ref_self_distill(q, p, negs, [16, 8], teacher=teacher, ids=ids.tolist())
    assert total.item() == pytest.approx(main + 0.7 * kd, rel=1e-10)
    students = {key for key in parts if key.endswith("self_kd")}
    assert ("exit4/dim16/self_kd" in students) is not own_teacher and "exit4/dim8/self_kd" in students
    assert len(students) == 3 * 2 - own_teacher


def test_self_distillation_moves_only_the_students():
    q, p, negs = random_exits()
    q = {l: t.requires_grad_() for l, t in q.items()}
    plain, _ = three_d_loss(q, p, [16, 8], exit_negs=negs)
    with_kd, _ = three_d_loss(q, p, [16, 8], exit_negs=negs, self_distill=1.0)
    grads = torch.autograd.grad(with_kd - plain, [q[1], q[4]])
    assert grads[0].abs().sum() > 0  # exit 1 learns from the teacher
    # the teacher (exit 4, full width) gets gradient only as the exit-4 dim-8 student: through its first 8 dims
    assert grads[1][:, 8:].abs().sum() < 1e-12 and grads[1][:, :8].abs().sum() > 0


def test_score_distill_kl_matches_numpy_and_masks():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 5, generator=g, dtype=torch.float64)
    exclude = torch.zeros(3, 5, dtype=torch.bool)
    exclude[0, 2] = exclude[2, 4] = True
    loss = score_distill_kl(s, t, exclude)
    assert loss.item() == pytest.approx(np_kl_rows(t.numpy(), s.detach().numpy(), ~exclude.numpy()), rel=1e-10)
    loss.backward()
    assert torch.isfinite(s.grad).all() and s.grad[0, 2] == 0 and s.grad[2, 4] == 0
    same = t.clone().requires_grad_()
    assert score_distill_kl(same, t).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="must both be \\(B, C\\) over the same candidates"):
        score_distill_kl(s, t[:, :4])


# ---------------------------------------------------------------------------------------------- distill
def test_distill_mse_matches_numpy_and_freezes_teacher():
    student = torch.randn(3, 2, 8, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(3, 2, 12, dtype=torch.float64, requires_grad=True)
    loss = distill_mse(student, teacher, kd_weight=0.5)
    expected = 0.5 * np.mean((student.detach().numpy() - teacher.detach().numpy()[..., :8]) ** 2)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert student.grad is not None and teacher.grad is None


def test_distill_errors():
    with pytest.raises(ValueError, match="kd_weight must be >= 0"):
        distill_mse(torch.zeros(2, 4), torch.zeros(2, 4), kd_weight=-1)
    with pytest.raises(ValueError, match="must share their leading shape"):
        distill_mse(torch.zeros(2, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"at least as wide as the student \(D >= d\), got D=4 and d=8"):
        distill_mse(torch.zeros(2, 8), torch.zeros(2, 4))


# -------------------------------------------------------------------------------------------- tiny model
def test_tiny_model_three_d_backward():
    model = tiny_model("qwen3", mel_rank=32, mel_ranks=[8, 16, 32]).train()
    tok = model.tokenizer
    columns = ["what is ml", "a query", "third one"], ["machine learning", "a doc", "other doc"]
    columns += (["neg 0", "neg 1", "neg 2"], ["neg 3", "neg 4", "neg 5"])
    batch = stack_columns([model.tokenize(texts, tok) for texts in columns])
    objective = ThreeDObjective.from_config(model.config, generator=torch.Generator().manual_seed(0))

    def embed(inputs, rank):
        return model(**inputs, rank=rank, exits=objective.exits).exit_embeddings

    total, parts, rank = objective.step(embed, batch, num_columns=4)
    assert rank in (8, 16, 32)
    assert objective.exits == model.config.exit_layers == [1, 2, 4]
    assert len(parts) == 3 * len(model.config.matryoshka_dims) * 2
    total.backward()
    assert model.mel.U.grad[:, :rank].abs().sum() > 0 and model.mel.V.grad[:rank].abs().sum() > 0
    for index, layer in enumerate(model.backbone.layers):
        grads = [param.grad for param in layer.parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, f"layer {index}"


def test_objective_draws_ranks_by_its_rank_weights():
    objective = ThreeDObjective(dims=[8], mel_ranks=[4, 8], rank_weights={4: 1.0, 8: 0.0})
    objective.generator = torch.Generator().manual_seed(0)
    assert {objective.sample_rank() for _ in range(50)} == {4}
    with pytest.raises(ValueError, match=r"rank_weights \{4: 1.0\} need the MEL axis"):
        ThreeDObjective(dims=[8], rank_weights={4: 1.0})


def test_objective_equals_three_d_loss_on_split_columns():
    """`ThreeDObjective` is `three_d_loss` on the flat column layout: columns split into q, p and (B, N, d)."""
    flat = {2: torch.randn(4 * 3, 16, dtype=torch.float64), 4: torch.randn(4 * 3, 16, dtype=torch.float64)}
    q, p, n = split_columns(flat, 4)
    assert n[2].shape == (3, 2, 16)
    assert torch.equal(n[4][1, 0], flat[4][2 * 3 + 1]) and torch.equal(n[4][1, 1], flat[4][3 * 3 + 1])
    objective = ThreeDObjective(dims=[16, 8], exits=[2, 4], kd_weight=0.3)
    teacher = torch.randn(4 * 3, 24, dtype=torch.float64)
    ids = torch.tensor([1, 2, 1])
    got, _ = objective(flat, 4, passage_ids=ids, teacher_embeddings=teacher)
    tq, tp, tn = split_columns({0: teacher}, 4)
    expected, _ = three_d_loss(
        q, p, [16, 8], exit_negs=n, passage_ids=ids, teacher_embeddings=(tq[0], tp[0], tn[0]), kd_weight=0.3
    )
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    with pytest.raises(ValueError, match=r"must be \(num_columns \* B, d\) with num_columns=5"):
        objective(flat, 5)
    with pytest.raises(ValueError, match="num_columns must be an integer >= 2"):
        objective(flat, 1)


def test_stack_columns_pads_to_one_width():
    columns = [
        {"input_ids": torch.tensor([[1, 2], [3, 4]]), "attention_mask": torch.ones(2, 2, dtype=torch.long)},
        {"input_ids": torch.tensor([[5, 6, 7], [8, 0, 0]]), "attention_mask": torch.tensor([[1, 1, 1], [1, 0, 0]])},
    ]
    batch = stack_columns(columns)
    assert batch["input_ids"].tolist() == [[1, 2, 0], [3, 4, 0], [5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match=r"same number of rows, got \[1, 2\]"):
        stack_columns([columns[0], {k: v[:1] for k, v in columns[1].items()}])


def test_step_self_distills_a_lower_rank_from_a_full_rank_pass():
    model = tiny_model("qwen3", mel_rank=32, mel_ranks=[8, 16, 32]).train()
    columns = ["what is ml", "a query", "third one"], ["machine learning", "a doc", "other doc"]
    batch = stack_columns([model.tokenize(texts, model.tokenizer) for texts in columns])
    objective = ThreeDObjective.from_config(model.config, self_distill=0.5)
    objective.sample_rank = lambda: 8  # this step draws a rank below the full one
    calls = []

    def embed(inputs, rank):
        calls.append((rank, torch.is_grad_enabled()))
        torch.manual_seed(0)  # the same dropout in every pass (the tiny model has none; cheap insurance)
        return model(**inputs, rank=rank, exits=objective.exits).exit_embeddings

    total, parts, rank = objective.step(embed, batch, num_columns=2)
    # a pass for the queries and one for the passages each time; the teacher's: full rank, no graph
    assert rank == 8 and calls == [(8, True)] * 2 + [(32, False)] * 2
    student = embed(batch, 8)
    with torch.no_grad():
        teacher = embed(batch, 32)[4]
    expected, _ = objective(
        student,
        2,
        passage_ids=passage_ids_from_tokens(batch["input_ids"][3:], batch["attention_mask"][3:]),
        self_teacher_embeddings=teacher,
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert "exit4/dim32/self_kd" in parts  # at a lower rank even the full depth and width is a student
    calls.clear()
    objective.sample_rank = lambda: 32
    _, parts, _ = objective.step(embed, batch, num_columns=2)
    assert calls == [(32, True)] * 2 and "exit4/dim32/self_kd" not in parts  # full rank: the teacher is this pass


def test_loss_from_config_ablations():
    config = tiny_model().config
    full = ThreeDObjective.from_config(config)
    off = ThreeDObjective.from_config(config, mrl=False, mll=False, mel=False)
    assert full.mel_ranks == config.mel_ranks and off.mel_ranks is None and off.sample_rank() is None
    assert (full.dims, full.exits) == (config.matryoshka_dims, config.exit_layers)
    assert (off.dims, off.exits) == ([32], [4])
    weighted = ThreeDObjective.from_config(config, mll=False, exit_weights={"4": 2.0, "2": 5.0})
    assert weighted.exit_weights == {4: 2.0}  # the exits an ablation leaves out are dropped


def test_exit_dims_train_only_the_listed_pairs():
    """Starbucks-style diagonal pairs: listed exits train only their dims (weight 1 each), the others every dim."""
    q, p, negs = random_exits()
    total, parts = three_d_loss(q, p, [16, 8, 4], exit_negs=negs, exit_dims={1: [4], 2: [8]})
    per_pair = {}
    for layer, dims in ((1, [4]), (2, [8])):
        qd, pd, nd = (np_unit(x[layer].numpy()[..., : dims[0]]) for x in (q, p, negs))
        per_pair[layer] = ref_in_batch(qd, pd) + ref_hard(qd, pd, nd)
    full = ref_three_d({4: q[4]}, {4: p[4]}, {4: negs[4]}, [16, 8, 4])
    assert total.item() == pytest.approx((per_pair[1] + per_pair[2] + full) / 3, rel=1e-10)
    assert {key.rsplit("/", 1)[0] for key in parts if key.startswith(("exit1/", "exit2/"))} == {
        "exit1/dim4",
        "exit2/dim8",
    }
    with pytest.raises(ValueError, match=r"exit_dims name exits \[3\] outside the exits used \[1, 2, 4\]"):
        three_d_loss(q, p, [16], exit_negs=negs, exit_dims={3: [8]})
    with pytest.raises(ValueError, match=r"exit_dims\[1\] must be a non-empty list of integers in 1..16"):
        three_d_loss(q, p, [16], exit_negs=negs, exit_dims={1: [32]})


@pytest.mark.parametrize("kind", ["qwen3", "bert"])
def test_step_embeds_queries_and_passages_at_their_own_widths_with_the_loss_and_gradients_of_one_flat_pass(kind):
    """Queries are shorter than passages; the flat batch pads them to the passages' width. The step embeds each side
    cut to its own longest row, and its loss and gradients are those of one pass over the flat batch (padding is
    masked; last-token and mean pooling alike)."""
    model = tiny_model(kind, mel_rank=32, mel_ranks=[8, 16, 32])
    tokenized = [
        model.tokenize(texts, model.tokenizer)
        for texts in (
            ["what is ml", "a query", "why"],
            ["machine learning is a field of study in artificial intelligence", "a document", "other doc"],
            ["the weather is sunny today and tomorrow", "neg", "the train leaves at eight"],
        )
    ]
    batch = stack_columns(tokenized)
    query_width, passage_width = tokenized[0]["input_ids"].shape[1], batch["input_ids"].shape[1]
    assert query_width < passage_width
    objective = ThreeDObjective.from_config(model.config)
    objective.sample_rank = lambda: 16
    shapes = []

    def embed(inputs, rank):
        shapes.append(tuple(inputs["input_ids"].shape))
        return model(**inputs, rank=rank, exits=objective.exits).exit_embeddings

    total, _, _ = objective.step(embed, batch, num_columns=3)
    assert shapes == [(3, query_width), (6, passage_width)]
    total.backward()
    grads = {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}
    model.zero_grad()
    ids = passage_ids_from_tokens(batch["input_ids"][3:6], batch["attention_mask"][3:6])
    expected, _ = objective(embed(batch, 16), 3, passage_ids=ids)  # one pass over the flat batch
    expected.backward()
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert grads.keys() == {name for name, param in model.named_parameters() if param.grad is not None}
    scale = max(float(grad.abs().max()) for grad in grads.values())  # rounding differs with the width
    for name, param in model.named_parameters():
        if param.grad is not None:  # (some are 0 but for rounding: a key bias shifts every score alike)
            torch.testing.assert_close(grads[name], param.grad, rtol=1e-4, atol=1e-6 * scale, msg=name)


def test_side_batches_is_the_flat_batch_when_no_side_is_narrower_and_checks_the_rows():
    batch = {
        "input_ids": torch.tensor([[1, 2, 0], [3, 0, 0], [4, 5, 0], [6, 7, 8]]),
        "attention_mask": torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]]),
    }
    queries, passages = side_batches(batch, 2)  # queries end at column 2, passages use all 3
    assert torch.equal(queries["input_ids"], batch["input_ids"][:2, :2])
    assert torch.equal(passages["attention_mask"], batch["attention_mask"][2:])
    (flat,) = side_batches({k: v[:, :2] for k, v in batch.items()}, 4)  # every side 2 wide: one pass
    assert torch.equal(flat["input_ids"], batch["input_ids"][:, :2])
    left_padded = {k: v[:, :2].flip(1) for k, v in batch.items()}
    assert [p["input_ids"].shape for p in side_batches(left_padded, 2)] == [(4, 2)]  # leading padding is not cut
    with pytest.raises(ValueError, match="a flat batch of 3 columns needs a multiple of 3 rows, got 4"):
        side_batches(batch, 3)

    shapes = []

    def embed(inputs, rank, layers=None):
        shapes.append((tuple(inputs["input_ids"].shape), rank, layers))
        return {2: inputs["input_ids"][:, :1].float()}

    out = embed_by_side(embed, side_batches(batch, 2), 16, layers=2)
    assert torch.equal(out[2], batch["input_ids"][:, :1].float())  # the rows back in the flat batch's order
    assert shapes == [((2, 2), 16, 2), ((2, 3), 16, 2)]


def test_step_with_separate_exits_runs_each_module_exit_and_a_full_teacher_pass():
    """The two-stage recipe's second stage: one pass per module exit at layers=k (step rank, with gradients), one
    full-depth full-rank pass without gradients as the teacher; the loss is the objective on those embeddings."""
    model = tiny_model("qwen3", mel_rank=32, mel_ranks=[8, 16, 32], exit_layers=[1, 2, 3, 4]).train()
    model.add_exit_modules("lora", [2, 3], rank=4)
    columns = ["what is ml", "a query", "third one"], ["machine learning", "a doc", "other doc"]
    batch = stack_columns([model.tokenize(texts, model.tokenizer) for texts in columns])
    objective = ThreeDObjective.from_config(model.config, separate_exits=True, self_distill=0.5)
    assert objective.exits == [2, 3] and objective.full_depth == 4
    objective.sample_rank = lambda: 16
    calls = []

    def embed(inputs, rank, layers=None):
        calls.append((rank, layers, torch.is_grad_enabled()))
        return model(**inputs, rank=rank, layers=layers, exits=[layers]).exit_embeddings

    total, parts, rank = objective.step(embed, batch, num_columns=2)
    assert calls == [(16, 2, True)] * 2 + [(16, 3, True)] * 2 + [(32, 4, False)] * 2  # queries, then passages
    student = {k: embed(batch, 16, k)[k] for k in (2, 3)}
    with torch.no_grad():
        teacher = embed(batch, 32, 4)[4]
    ids = passage_ids_from_tokens(batch["input_ids"][3:], batch["attention_mask"][3:])
    expected, _ = objective(student, 2, passage_ids=ids, self_teacher_embeddings=teacher)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert "exit3/dim32/self_kd" in parts and not any(key.startswith("exit4/") for key in parts)
    with pytest.raises(ValueError, match=r"separate_exits trains exit modules, but the model has none"):
        ThreeDObjective.from_config(tiny_model().config, separate_exits=True)


def test_embeddings_under_their_old_keywords_still_work_with_a_warning():
    """`teacher=` / `self_teacher=` took embeddings before `teacher` came to mean only the teacher model."""
    torch.manual_seed(0)
    q, p, t = ({4: torch.randn(4, 16)} for _ in range(3))
    new, _ = three_d_loss(
        q, p, [16, 8], use_hard_negatives=False, self_distill=0.5, self_teacher_embeddings=(t[4], t[4], None)
    )
    with pytest.warns(DeprecationWarning, match=r"three_d_loss\(self_teacher=\) is now self_teacher_embeddings="):
        old, _ = three_d_loss(
            q, p, [16, 8], use_hard_negatives=False, self_distill=0.5, self_teacher=(t[4], t[4], None)
        )
    assert old.item() == new.item()
    with pytest.raises(TypeError, match="give teacher_embeddings= only"):
        three_d_loss(q, p, [16], teacher=(t[4], t[4], None), teacher_embeddings=(t[4], t[4], None), kd_weight=1.0)
