"""MLEmbed3DLoss: the sentence-transformers loss equals `three_d_loss` on the model's own exits, and trains.

A tiny random ML-Embed model (Qwen3, hidden 32, 4 layers, exits 1/2/4, dims 8/16/32, MEL ranks 8/16/32) is exported
as a Hub folder and loaded with `SentenceTransformer(folder, trust_remote_code=True)`, as users do.
"""

from __future__ import annotations

import pytest
import torch
from conftest import free_port, tiny_model
from torch import nn

from mlembed.export import convert, hub
from mlembed.losses import mrl_weights, sample_mel_rank, three_d_loss
from mlembed.losses.st_loss import MLEmbed3DLoss, _elastic_model
from mlembed.st import elastic_module

ANCHORS = ["what is ml", "a query here", "third question?", "how do cats sleep"]
POSITIVES = ["machine learning is a field", "a document", "the third answer", "cats sleep a lot, mostly by day"]
NEGATIVES = [  # two negative columns; lengths differ from the positives, so merging pads
    ["gardening tips", "nothing", "x", "dogs bark at the mailman every single morning"],
    ["stock prices fell", "an unrelated page with many words in it", "yy", "zz"],
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("st_loss")
    out = {}
    for name, mel_rank in (("mel", 32), ("dense", None)):
        axes = {"mel_ranks": [8, 16, 32]} if mel_rank else {}
        model = tiny_model("qwen3", mel_rank=mel_rank, **axes)
        convert.save_folder(model, tmp / f"{name}-ml", model.tokenizer)
        out[name] = hub.export_hub(tmp / f"{name}-ml", tmp / f"{name}-hub")
    return out


def load(folder, **kwargs):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", **kwargs)


def reference_loss(st, columns, rank, mll=True, mrl=True):
    """three_d_loss on exits computed directly by the MLEmbedModel; negatives embedded flat, query-major."""
    elastic = elastic_module(st)
    config = elastic.config

    def exits(texts):
        features = st.preprocess(texts)
        ids, mask = features["input_ids"], features["attention_mask"]
        return elastic(input_ids=ids, attention_mask=mask, rank=rank, exits=True).exit_embeddings

    negatives = columns[2:]
    flat = [column[i] for i in range(len(columns[0])) for column in negatives]  # row i*N + j = negative j of i
    total, _ = three_d_loss(
        exits(columns[0]),
        exits(columns[1]),
        config.matryoshka_dims if mrl else [config.hidden_size],
        exit_negs=exits(flat) if negatives else None,
        use_hard_negatives=bool(negatives),
        exits=None if mll else [config.num_hidden_layers],
        gather=False,
    )
    return total


@pytest.mark.parametrize(
    "n_negatives, mel, mll, mrl",
    [(2, True, True, True), (1, True, True, True), (0, True, True, True), (2, False, False, False)],
)
def test_loss_equals_three_d_loss_on_the_model_exits(folders, n_negatives, mel, mll, mrl):
    st = load(folders["mel"], trust_remote_code=True).eval()
    columns = [ANCHORS, POSITIVES, *NEGATIVES[:n_negatives]]
    loss_fn = MLEmbed3DLoss(st, mel=mel, mll=mll, mrl=mrl, generator=torch.Generator().manual_seed(3))
    got = loss_fn([st.preprocess(column) for column in columns], labels=None)

    config = elastic_module(st).config
    rank = sample_mel_rank(config.mel_ranks, torch.Generator().manual_seed(3)) if mel else config.mel_rank
    if mel:
        assert rank < config.mel_rank  # the seed draws a reduced rank, so the rank really reaches the model
    assert loss_fn.last_rank == rank
    expected = reference_loss(st, columns, rank, mll=mll, mrl=mrl)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    full_rank = reference_loss(st, columns, config.mel_rank, mll=mll, mrl=mrl)
    assert mel == (abs(full_rank.item() - got.item()) > 1e-4)  # with MEL the reduced rank changes the loss

    got.backward()  # at rank k only the first k columns of U get a gradient
    u_grad = elastic_module(st).mel.U.grad
    assert u_grad[:, :rank].abs().sum() > 0
    assert torch.count_nonzero(u_grad[:, rank:]) == 0


def test_ablated_loss_equals_sentence_transformers_matryoshka_mnrl(folders):
    """mel=False, mll=False, pairs: the stock MatryoshkaLoss(MultipleNegativesRankingLoss) with the MRL weights."""
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

    st = load(folders["mel"], trust_remote_code=True).eval()
    features = [st.preprocess(ANCHORS), st.preprocess(POSITIVES)]
    ours = MLEmbed3DLoss(st, temperature=0.05, mel=False, mll=False)(features, labels=None)
    weights = mrl_weights(elastic_module(st).config.matryoshka_dims)
    stock = MatryoshkaLoss(
        st,
        MultipleNegativesRankingLoss(st, scale=20.0),
        matryoshka_dims=list(weights),
        matryoshka_weights=list(weights.values()),
    )
    features = [st.preprocess(ANCHORS), st.preprocess(POSITIVES)]  # fresh dicts: ST losses write into them
    assert ours.item() == pytest.approx(stock(features, labels=None).item(), rel=1e-5)


@pytest.mark.slow
def test_sentence_transformer_trainer_run(folders, tmp_path):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    st = load(folders["mel"], trust_remote_code=True)
    elastic = elastic_module(st)
    data = {
        "anchor": [f"question {i}: {w}" for i, w in enumerate("alpha beta gamma delta eps zeta eta theta".split())],
        "positive": [f"answer {i} is {w * 2}" for i, w in enumerate("ab cd ef gh ij kl mn op".split())],
        "negative": [f"off topic {i} {w}" for i, w in enumerate("qr st uv wx yz AB CD EF".split())],
    }
    columns = [data["anchor"], data["positive"], data["negative"]]
    probe = MLEmbed3DLoss(st, mel=False)  # deterministic: full rank, every exit and dim

    def full_rank_loss() -> float:
        with torch.no_grad():
            return probe([st.preprocess(c) for c in columns], labels=None).item()

    before, u_before = full_rank_loss(), elastic.mel.U.detach().clone()
    loss = MLEmbed3DLoss(st, generator=torch.Generator().manual_seed(0))
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=8,
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        warmup_steps=0,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        dataloader_drop_last=True,
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        use_cpu=True,
        seed=0,
    )
    trainer = SentenceTransformerTrainer(model=st, args=args, train_dataset=Dataset.from_dict(data), loss=loss)
    result = trainer.train()

    assert result.global_step == 8
    assert loss.last_rank in elastic.config.mel_ranks
    assert not torch.allclose(elastic.mel.U.detach(), u_before)  # the MEL factors were trained
    assert full_rank_loss() < before
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 8 and all(torch.isfinite(torch.tensor(logged)))


def test_config_dict_and_citation(folders):
    st = load(folders["mel"], trust_remote_code=True)
    loss_fn = MLEmbed3DLoss(st, temperature=0.02, mll=False)
    config = loss_fn.get_config_dict()
    assert config["temperature"] == 0.02 and loss_fn.scale == pytest.approx(50.0)
    assert (config["mel_ranks"], config["exit_layers"], config["matryoshka_dims"]) == ([8, 16, 32], [4], [8, 16, 32])
    assert "ML-Embed" in loss_fn.citation and config["rank_weights"] is None
    weighted = MLEmbed3DLoss(st, rank_weights={8: 1.0, 16: 0.0, 32: 0.0}, generator=torch.Generator().manual_seed(0))
    assert weighted.get_config_dict()["rank_weights"] == {8: 1.0, 16: 0.0, 32: 0.0}
    assert {weighted.objective.sample_rank() for _ in range(20)} == {8}


# ---------------------------------------------------------------------------------------------------- errors
def test_stock_sentence_transformer_is_refused(folders):
    stock = load(folders["mel"])  # no trust_remote_code: the plain Qwen3Model (compatibility mode)
    assert type(stock[0].auto_model).__name__ == "Qwen3Model"
    with pytest.raises(ValueError, match=r"does not wrap one: load it with SentenceTransformer\(path, trust_remote"):
        MLEmbed3DLoss(stock)


def test_temperature_must_be_positive(folders):
    st = load(folders["mel"], trust_remote_code=True)
    with pytest.raises(ValueError, match=r"temperature must be > 0 \(the paper: 0\.05; scale = 1 / temperature\)"):
        MLEmbed3DLoss(st, temperature=0)


def test_mel_needs_a_factorised_embedding(folders):
    st = load(folders["dense"], trust_remote_code=True)
    with pytest.raises(ValueError, match="mel=True needs a factorised token embedding.*pass mel=False"):
        MLEmbed3DLoss(st)
    loss_fn = MLEmbed3DLoss(st, mel=False)  # the dense model trains MLL + MRL
    assert loss_fn([st.preprocess(ANCHORS), st.preprocess(POSITIVES)], labels=None).item() > 0
    assert loss_fn.last_rank is None


def test_needs_two_columns(folders):
    st = load(folders["mel"], trust_remote_code=True)
    with pytest.raises(ValueError, match=r"needs \(anchor, positive\[, negative_1, ...\]\) columns, got 1 column"):
        MLEmbed3DLoss(st)([st.preprocess(ANCHORS)], labels=None)


def test_the_loss_runs_through_the_wrapped_model(folders):
    """The trainer swaps in its DDP / DataParallel wrapper: the forward must go through it (gradient sync)."""
    st = load(folders["mel"], trust_remote_code=True)
    batch = [st.preprocess(ANCHORS), st.preprocess(POSITIVES)]
    plain = MLEmbed3DLoss(st, generator=torch.Generator().manual_seed(1))(batch, labels=None)
    calls = []
    wrapped = nn.DataParallel(st)
    wrapped.register_forward_pre_hook(lambda *_: calls.append(1))
    loss_fn = MLEmbed3DLoss(st, generator=torch.Generator().manual_seed(1))
    loss_fn.model = wrapped  # what the trainer does after wrapping the model
    value = loss_fn(batch, labels=None)
    assert len(calls) == 2  # the anchors in one forward pass, the (longer) positives in another
    torch.testing.assert_close(value, plain)
    value.backward()
    assert _elastic_model(wrapped).mel.U.grad is not None


DDP_SCRIPT = r"""
import os, random, sys
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from mlembed.losses import MLEmbed3DLoss

torch.manual_seed(0)
random.seed(0)
st = SentenceTransformer(sys.argv[1], trust_remote_code=True, device="cpu")
before = st[0].auto_model.mel.U.detach().clone()
words = "cat dog tree car sun moon fish bird rock rain snow wind".split()
rows = [random.sample(words, 3) for _ in range(64)]
data = Dataset.from_dict({"anchor": [" ".join(r[:2]) for r in rows], "positive": [" ".join(r) for r in rows]})
args = SentenceTransformerTrainingArguments(sys.argv[2], max_steps=4, per_device_train_batch_size=8,
                                            learning_rate=1e-3, report_to="none", use_cpu=True, ddp_backend="gloo",
                                            save_strategy="no")
SentenceTransformerTrainer(model=st, args=args, train_dataset=data, loss=MLEmbed3DLoss(st)).train()
state = st[0].auto_model.state_dict()
assert not torch.equal(before, state["mel.U"])
torch.save({k: v.detach().clone() for k, v in state.items()}, f"{sys.argv[2]}/rank{os.environ['RANK']}.pt")
from mlembed import distributed
left = distributed.close()  # gloo threads alive at the interpreter's exit can abort the finished run (SIGABRT)
assert not left, left
"""


@pytest.mark.slow
def test_ddp_training_keeps_processes_in_sync(folders, tmp_path):
    """torchrun, 2 processes, different batches: equal weights after training prove the gradients are synced."""
    import os
    import subprocess
    import sys

    port = free_port()
    script = tmp_path / "ddp_st.py"
    script.write_text(DDP_SCRIPT)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(port),
        str(script),
        str(folders["mel"]),
        str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for key in rank0:
        torch.testing.assert_close(rank0[key], rank1[key], atol=0, rtol=0, msg=key)


PARITY_SCRIPT = r"""
import json, os, sys
import torch
import torch.distributed as dist
from sentence_transformers import SentenceTransformer
from transformers import TrainingArguments
from mlembed.losses import MLEmbed3DLoss, ThreeDObjective, stack_columns
from mlembed.st import elastic_module
from mlembed.train import MLEmbedTrainer

world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
if world > 1:
    dist.init_process_group("gloo")
folder, out, columns, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
seed = options.pop("seed", 5)
per = len(columns[0]) // world
local = [column[rank * per : (rank + 1) * per] for column in columns]  # this process's rows of every column


def gradients(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


# front end 1: sentence-transformers' loss on the columns as SentenceTransformerTrainer hands them over
st = SentenceTransformer(folder, trust_remote_code=True, device="cpu")
features = [st.preprocess(column) for column in local]
st_loss = MLEmbed3DLoss(st, generator=torch.Generator().manual_seed(seed), **options)
loss_st = st_loss(features, labels=None)
loss_st.backward()
grads_st = gradients(elastic_module(st))

# front end 2: MLEmbedTrainer.compute_loss on the same tokens (a fresh copy of the same weights)
model = elastic_module(SentenceTransformer(folder, trust_remote_code=True, device="cpu"))
args = TrainingArguments(out, use_cpu=True, report_to="none", per_device_train_batch_size=per)
objective = ThreeDObjective.from_config(model.config, generator=torch.Generator().manual_seed(seed), **options)
trainer = MLEmbedTrainer(model=model, args=args, processing_class=st.tokenizer, objective=objective)
inputs = {**stack_columns(features), "num_columns": len(local), "in_batch": True, "dataset": "d"}
loss_trainer = trainer.compute_loss(model, inputs)
loss_trainer.backward()
grads_trainer = gradients(model)

assert grads_st.keys() == grads_trainer.keys()
report = {
    "rank_drawn": [st_loss.last_rank, trainer._last_rank],
    "loss": [float(loss_st), float(loss_trainer)],
    "max_grad_diff": max(float((grads_st[k] - grads_trainer[k]).abs().max()) for k in grads_st),
    "max_grad": max(float(g.abs().max()) for g in grads_st.values()),
    "params_with_grad": len(grads_st),
}
with open(f"{out}/parity{rank}.json", "w") as handle:
    json.dump(report, handle)
if world > 1:
    dist.destroy_process_group()
"""


@pytest.mark.parametrize(
    "nproc, options",
    [
        (1, {}),
        (1, {"self_distill": 0.5, "exit_weights": {"4": 2.0}, "seed": 2}),  # seed 2 draws rank 16 of 32
        pytest.param(2, {}, marks=pytest.mark.slow),
        pytest.param(2, {"self_distill": 0.5, "seed": 2}, marks=pytest.mark.slow),
    ],
)
def test_trainer_and_sentence_transformers_optimise_the_same_objective(folders, tmp_path, nproc, options):
    """The same rows and tokens through MLEmbedTrainer and MLEmbed3DLoss, defaults (and self-distillation with exit
    weights): the same rank, loss and gradients, in one process and in two (gloo; in-batch negatives gathered
    across processes in both)."""
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "parity.py"
    script.write_text(PARITY_SCRIPT)
    columns = [ANCHORS, [POSITIVES[0], POSITIVES[1], POSITIVES[0], POSITIVES[3]], *NEGATIVES]  # a duplicate positive
    launch = [sys.executable]
    if nproc > 1:
        launch += ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(free_port())]
    command = [*launch, str(script), str(folders["mel"]), str(tmp_path), json.dumps(columns), json.dumps(options)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in range(nproc):
        report = json.loads((tmp_path / f"parity{rank}.json").read_text())
        assert report["rank_drawn"][0] == report["rank_drawn"][1]
        assert report["loss"][0] == pytest.approx(report["loss"][1], rel=1e-6), report
        assert report["params_with_grad"] > 10 and report["max_grad"] > 0
        assert report["max_grad_diff"] <= 1e-6 * max(1.0, report["max_grad"]), report
        assert report["rank_drawn"][0] < 32 or not options  # the seed draws a reduced rank: a full-rank teacher pass
