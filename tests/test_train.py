"""Training through the transformers Trainer: recipe configs, an end-to-end CPU run, resume, fine-tuning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, backbone_config, free_port, synthetic_retrieval, tiny_model, tiny_tokenizer
from transformers import AutoModel, TrainerCallback, TrainingArguments

from mlembed.cli import main as cli
from mlembed.train.config import apply_overrides, load_config, parse_config
from mlembed.train.recipe import build_model, build_trainer, run
from modeling_mlembed import MLEmbedModel

CONFIGS = sorted((ROOT / "configs").glob("*.json")) + sorted((ROOT / "mlembed" / "mini" / "configs").glob("*.json"))


@pytest.fixture
def workdir(tmp_path):
    return make_workdir(tmp_path)


def make_workdir(tmp_path: Path) -> Path:
    """A tiny random Qwen3 backbone, the character tokenizer, two synthetic datasets and `tiny.json`."""
    torch.manual_seed(0)
    AutoModel.from_config(backbone_config("qwen3")).save_pretrained(tmp_path / "base")
    tiny_tokenizer().save_pretrained(tmp_path / "base")
    (tmp_path / "data").mkdir()
    synthetic_retrieval(64, 0).to_parquet(tmp_path / "data" / "words_retrieval.parquet")
    synthetic_retrieval(48, 1).to_parquet(tmp_path / "data" / "more_retrieval.parquet")
    config = {
        "launch": "mlembed train --config tiny.json",
        "model": {"base": "base", "mel_rank": 32, "exit_layers": [1, 2, 4]},
        "data": {"train": ["data/*.parquet"], "max_length": 32},
        "loss": {"temperature": 0.05},
        "training": {
            "output_dir": "out",
            "max_steps": 12,
            "per_device_train_batch_size": 8,
            "learning_rate": 1e-3,
            "logging_steps": 2,
            "save_steps": 6,
            "report_to": "none",
            "use_cpu": True,
            "seed": 0,
        },
        "export": {"hub": True, "repo_id": None},
    }
    config["model"]["base"] = str(tmp_path / "base")
    (tmp_path / "tiny.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_is_valid(path, tmp_path):
    config = load_config(path)
    assert path.name in config.launch  # the header shows its own launch command
    assert config.loss.temperature == 0.05
    deepspeed = config.training.get("deepspeed")
    if deepspeed:
        assert "zero_optimization" in json.loads((path.parent / deepspeed).read_text())
    args = config.training_arguments(output_dir=str(tmp_path), deepspeed=None, bf16=False, use_cpu=True)
    if "-stage" in path.name:  # the released sizes follow the reference recipe
        assert config.model.mel_rank == 512
        assert args.adam_beta2 == 0.98 and args.weight_decay == 0.01 and args.per_device_train_batch_size == 8
        assert args.lr_scheduler_type == "cosine_with_min_lr" and args.lr_scheduler_kwargs == {"min_lr": 1e-7}


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_accelerate_config_loads(path):
    """accelerate's own loader (unknown keys are errors); the header's launch command names this very file."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.num_processes % config.num_machines == 0
    assert f"--config_file configs/accelerate/{path.name}" in path.read_text().split("compute_environment")[0]


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"model": {"base": "x"}, "training": {"output_dir": "o"}, "optimizer": {}}, r"unknown top-level key\(s\) \["),
        (
            {"model": {"base": "x", "rank": 8}, "training": {"output_dir": "o"}},
            r"unknown key\(s\) \['rank'\] in section",
        ),
        ({"model": {}, "training": {"output_dir": "o"}}, "model.base is required"),
        ({"model": {"base": "x"}}, "training.output_dir is required"),
        (
            {"model": {"base": "x"}, "training": {"output_dir": "o"}, "data": {"on_invalid": "drop"}},
            "'error' or 'skip'",
        ),
        ({"model": {"base": "x"}, "training": {"output_dir": "o"}, "loss": {"kd_weight": 1.0}}, "go together"),
        ({"model": {"base": "x", "dtype": "int8"}, "training": {"output_dir": "o"}}, "model.dtype must be one of"),
        ({"model": {"base": "x"}, "training": {"output_dir": "o"}, "loss": {"self_distill": -1}}, "self_distill must"),
        (
            {"model": {"base": "x"}, "training": {"output_dir": "o"}, "loss": {"exit_weights": {"last": 2}}},
            r"loss.exit_weights must map integers \(as strings\) to weights >= 0",
        ),
    ],
)
def test_config_errors(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_config(raw)


def test_overrides_and_missing_data(workdir):
    with pytest.raises(ValueError, match="section.key=value"):
        apply_overrides({}, ["max_steps=3"])
    config = load_config(workdir / "tiny.json", ['data.train=["nothing/*.parquet"]', "training.max_steps=3"])
    assert config.training["max_steps"] == 3
    with pytest.raises(FileNotFoundError, match="no parquet file matches"):
        config.data_files()


def test_end_to_end_train_lowers_loss_and_writes_loadable_folders(workdir, capsys):
    cli(["train", "--config", str(workdir / "tiny.json"), "--set", "training.gradient_checkpointing=true"])
    state = json.loads((workdir / "out" / "checkpoint-12" / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert losses[-1] < 0.7 * losses[0]
    ranks = {entry["mel_rank"] for entry in state["log_history"] if "mel_rank" in entry}
    assert ranks and ranks <= {32}  # rank 32 is the only nested rank of a rank-32 model
    assert any(key.startswith("loss/words_retrieval") for entry in state["log_history"] for key in entry)
    speeds = [e["throughput/tokens_per_s"] for e in state["log_history"] if "throughput/tokens_per_s" in e]
    assert len(speeds) == len(losses) and all(s > 0 for s in speeds)
    model = AutoModel.from_pretrained(workdir / "out" / "final", trust_remote_code=True)
    assert model.encode(["cat dog"], layers=2).shape == (1, 32)
    assert model.config.max_seq_length == 32  # the training length (data.max_length) is recorded
    assert json.loads((workdir / "out" / "hub" / "sentence_bert_config.json").read_text())["max_seq_length"] == 32
    hub_files = {p.name for p in (workdir / "out" / "hub").iterdir()}
    assert {"mel.safetensors", "modules.json", "README.md", "modeling_mlembed.py"} <= hub_files
    assert "wrote" in capsys.readouterr().out


# `mlembed train` (the CLI's own `main`), then the threads left for the interpreter's exit, written per rank
CLI_THEN_THREADS = """
import json, os, sys
from pathlib import Path
from mlembed.cli import main

main(sys.argv[2:])
names = []
for comm in Path("/proc/self/task").glob("*/comm"):  # native threads too (threading.enumerate shows Python's only)
    try:
        names.append(comm.read_text().strip())
    except OSError:  # ended meanwhile
        pass
Path(sys.argv[1], f"threads.{os.environ['RANK']}.json").write_text(json.dumps(sorted(names)))
"""


def train_cli(
    workdir: Path, name: str, nproc: int, extra: list[str], nnodes: int = 1, resume: str | None = None
) -> dict[str, torch.Tensor]:
    """`mlembed train` on tiny.json for 3 steps, batch 8 split over `nproc` processes (torchrun + gloo when > 1).

    `nnodes` > 1 starts one torchrun per "node" on this machine, as on a cluster (node ranks, a master address),
    each with nproc / nnodes processes. With several processes, each must end `mlembed train` with no gloo thread
    left: one alive at the interpreter's exit can abort the finished run with SIGABRT (see `distributed.close`).
    """
    import os
    import shutil
    import subprocess
    import sys

    from safetensors.torch import load_file

    overrides = [
        f"training.output_dir={workdir / name}",
        "training.max_steps=3",
        "export.hub=false",
        f"training.per_device_train_batch_size={8 // nproc}",
        *extra,
    ]
    launchers = [[sys.executable]]
    if nproc > 1:
        overrides.append("training.ddp_backend=gloo")
        port = str(free_port())
        per_node = ["--nnodes", str(nnodes), "--nproc_per_node", str(nproc // nnodes)]
        per_node += ["--master_addr", "127.0.0.1", "--master_port", port]
        launchers = [
            [sys.executable, "-m", "torch.distributed.run", *per_node, "--node_rank", str(node)]
            for node in range(nnodes)
        ]
    tail = ["-m", "mlembed.cli"]
    threads = workdir / f"{name}.threads"
    if nproc > 1:
        shutil.rmtree(threads, ignore_errors=True)
        threads.mkdir()
        (workdir / "cli_then_threads.py").write_text(CLI_THEN_THREADS)
        tail = [str(workdir / "cli_then_threads.py"), str(threads)]
    tail += ["train", "--config", str(workdir / "tiny.json")]
    tail += (["--resume-from", resume] if resume else []) + ["--set", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    logs = [workdir / f"{name}.{node}.log" for node in range(len(launchers))]  # files: no pipe fills up and blocks
    procs = []
    for launcher, log in zip(launchers, logs):
        with log.open("w") as out:
            procs.append(subprocess.Popen([*launcher, *tail], cwd=workdir, env=env, stdout=out, stderr=out))
    for proc, log in zip(procs, logs):
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    (workdir / f"{name}.log").write_text("\n".join(log.read_text() for log in logs))
    if nproc > 1:
        left = {p.name: [t for t in json.loads(p.read_text()) if "gloo" in t] for p in threads.glob("threads.*.json")}
        assert len(left) == nproc and not any(left.values()), left
    return load_file(workdir / name / "final" / "model.safetensors")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: one process on the combined batch of 8."""
    workdir = make_workdir(tmp_path_factory.mktemp("dist"))
    return workdir, train_cli(workdir, "one", 1, [])


def assert_same_weights(one: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> None:
    assert one.keys() == other.keys()
    for key in one:  # three AdamW steps at lr 1e-3 from the same start: equal up to float reduction order
        torch.testing.assert_close(one[key], other[key], atol=2e-4, rtol=0, msg=key)


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_combined_batch(one_process):
    """torchrun, gloo, CPU: 2 x batch 4 (in-batch negatives gathered across processes) == 1 x batch 8."""
    workdir, one = one_process
    assert_same_weights(one, train_cli(workdir, "ddp", 2, []))


@pytest.mark.slow
def test_two_nodes_equal_one_process(one_process):
    """The multi-node launch: two torchrun "nodes" (node ranks 0 and 1, one process each) == one process."""
    workdir, one = one_process
    assert_same_weights(one, train_cli(workdir, "nodes", 2, [], nnodes=2))


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_shards_state_and_equals_one_process(one_process, stage):
    """DeepSpeed ZeRO-2 / ZeRO-3 from the shipped configs, 2 processes on the CPU (gloo): the same weights as one
    process, each rank saving its own shard of the optimizer state (and, for ZeRO-3, of the parameters)."""
    pytest.importorskip("deepspeed")
    workdir, one = one_process
    name = f"zero{stage}"
    ds_config = ROOT / "configs" / "deepspeed" / f"zero{stage}.json"
    weights = train_cli(workdir, name, 2, [f"training.deepspeed={ds_config}", "training.save_steps=3"])
    assert_same_weights(one, weights)
    shards = sorted(p.name for p in (workdir / name / "checkpoint-3" / "global_step3").iterdir())
    for rank in (0, 1):
        assert any(f"rank_{rank}_" in s and "optim_states" in s for s in shards), shards
        if stage == 3:
            assert f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt" in shards, shards
    model = AutoModel.from_pretrained(workdir / name / "final", trust_remote_code=True)
    assert model.encode(["cat dog"], layers=2, dim=16).shape == (1, 16)


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True  # a "kill" right after the checkpoint at this step


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(workdir):
    config = load_config(workdir / "tiny.json", ["model.mel_rank=32", "training.max_steps=6", "training.save_steps=3"])
    config.model.exit_layers = [1, 2, 4]
    straight = build_trainer(config, output_dir=str(workdir / "a"))
    straight.model.config.mel_ranks = [8, 16, 32]  # several ranks, so the rank draws must resume too
    straight.train()
    interrupted = build_trainer(config, output_dir=str(workdir / "b"))
    interrupted.model.config.mel_ranks = [8, 16, 32]
    interrupted.add_callback(StopAt(3))
    interrupted.train()
    assert interrupted.state.global_step == 3 and (workdir / "b" / "checkpoint-3").is_dir()
    resumed = build_trainer(config, output_dir=str(workdir / "b"))
    resumed.model.config.mel_ranks = [8, 16, 32]
    resumed.train(resume_from_checkpoint=str(workdir / "b" / "checkpoint-3"))
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0, msg=key)
    ranks_a = [e["mel_rank"] for e in straight.state.log_history if "mel_rank" in e]
    ranks_b = [e["mel_rank"] for e in resumed.state.log_history if "mel_rank" in e]
    assert ranks_a[-1] == ranks_b[-1]


def trainer_api_args(tmp_path: Path, steps: int = 4) -> TrainingArguments:
    return TrainingArguments(
        str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=8,
        report_to="none",
        use_cpu=True,
        learning_rate=1e-3,
    )


@pytest.mark.parametrize("columns", ["sentence-transformers", "parquet-format"])
def test_finetune_with_the_trainer_api_on_a_datasets_dataset(tmp_path, columns):
    """The call transformers users write: a plain Dataset and the tokenizer; the collator is built from them."""
    from datasets import Dataset

    from mlembed.train import MLEmbedCollator, MLEmbedTrainer

    frame = synthetic_retrieval(32, 3)
    if columns == "sentence-transformers":
        data = {"anchor": frame["query"], "positive": frame["passage"], "negative": frame["negative_1"]}
    else:
        data = {"query": frame["query"], "passage": frame["passage"], "negative_1": frame["negative_1"]}
    dataset = Dataset.from_dict({k: list(v) for k, v in data.items()})
    model = tiny_model(mel_rank=16).train()
    before = model.mel.V.detach().clone()
    args = trainer_api_args(tmp_path)
    args_before = args.to_dict()
    trainer = MLEmbedTrainer(model=model, args=args, train_dataset=dataset, processing_class=model.tokenizer)
    assert args.to_dict() == args_before  # the caller's arguments are used as given
    assert isinstance(trainer.data_collator, MLEmbedCollator)
    assert trainer.data_collator.append_eos is model.config.append_eos is True
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["num_columns"] == 3 and (batch["input_ids"][:, 0] != 0).all()
    result = trainer.train()
    assert result.global_step == 4 and torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.equal(before, model.mel.V.detach())
    optimised = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert any(p is model.mel.U for p in optimised)  # the factors train; no dense vocab x d matrix exists
    assert not any(p.shape == (model.config.vocab_size, model.config.hidden_size) for p in optimised)


def test_trainer_api_dataset_dict_is_one_dataset_per_step(tmp_path):
    from datasets import Dataset, DatasetDict

    from mlembed.train import MLEmbedTrainer

    def pairs(seed: int) -> Dataset:
        frame = synthetic_retrieval(16, seed)
        return Dataset.from_dict({"anchor": list(frame["query"]), "positive": list(frame["passage"])})

    model = tiny_model(mel_rank=16).train()
    data = DatasetDict({"words": pairs(1), "more_clustering": pairs(2)})
    with pytest.raises(ValueError, match="a clustering dataset needs at least 1 negative"):
        MLEmbedTrainer(
            model=model, args=trainer_api_args(tmp_path), train_dataset=data, processing_class=model.tokenizer
        )
    data = DatasetDict({"words": pairs(1), "more": pairs(2)})
    trainer = MLEmbedTrainer(
        model=model, args=trainer_api_args(tmp_path, 4), train_dataset=data, processing_class=model.tokenizer
    )
    names = [d.name for d in trainer.train_dataset.datasets]
    assert names == ["words", "more"]
    seen = [batch["dataset"] for batch in trainer.get_train_dataloader()]
    assert sorted(seen) == ["more", "more", "words", "words"]
    trainer.train()
    assert {k for e in trainer.state.log_history for k in e if k.startswith("loss/")} <= {"loss/words", "loss/more"}


def test_trainer_api_errors_name_what_is_expected(tmp_path):
    from datasets import Dataset

    from mlembed.train import MLEmbedTrainer

    model = tiny_model(mel_rank=16)
    wrong = Dataset.from_dict({"question": ["a"], "answer": ["b"]})
    with pytest.raises(
        ValueError, match=r"needs exactly one of the columns \['anchor', 'query'\], found \['question', 'answer'\]"
    ):
        MLEmbedTrainer(
            model=model, args=trainer_api_args(tmp_path), train_dataset=wrong, processing_class=model.tokenizer
        )
    with pytest.raises(TypeError, match="train_dataset must be a datasets.Dataset, a DatasetDict of them, or a Train"):
        MLEmbedTrainer(
            model=model, args=trainer_api_args(tmp_path), train_dataset=[("a", "b")], processing_class=model.tokenizer
        )
    right = Dataset.from_dict({"anchor": ["a"], "positive": ["b"]})
    with pytest.raises(ValueError, match=r"needs processing_class= \(the tokenizer\) or data_collator="):
        MLEmbedTrainer(model=model, args=trainer_api_args(tmp_path), train_dataset=right)


def test_distillation_from_a_frozen_teacher(workdir):
    from mlembed.export import convert

    convert.convert_base(workdir / "base", workdir / "teacher", rank=None)
    config = load_config(
        workdir / "tiny.json", ["loss.kd_weight=0.5", f'loss.teacher="{workdir / "teacher"}"', "training.max_steps=2"]
    )
    trainer = build_trainer(config, output_dir=str(workdir / "kd"))
    teacher_before = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    trainer.train()
    batch = next(iter(trainer.get_train_dataloader()))
    _, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    assert any(key.endswith("/kd") for key in outputs["parts"])
    assert all(torch.equal(v, trainer.teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert isinstance(Path(trainer.args.output_dir), Path)


def test_recipe_passes_the_objective_options_and_self_distils(workdir):
    overrides = ["loss.self_distill=0.5", 'loss.exit_weights={"4": 2}', 'loss.dim_weights={"32": 1, "16": 1, "8": 1}']
    config = load_config(workdir / "tiny.json", [*overrides, "training.max_steps=2"])
    trainer = build_trainer(config, output_dir=str(workdir / "selfkd"))
    objective = trainer.objective
    assert (objective.self_distill, objective.exit_weights) == (0.5, {4: 2.0})
    assert objective.weights == {32: 1.0, 16: 1.0, 8: 1.0} and objective.dims == [8, 16, 32]
    assert objective.rank_weights is None  # the paper's P(k) ~ k
    trainer.train()
    batch = next(iter(trainer.get_train_dataloader()))
    _, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    assert "exit1/dim8/self_kd" in outputs["parts"] and "exit1/dim32/self_kd" in outputs["parts"]


def test_recipe_rank_weights_reach_the_objective_and_must_name_the_trained_ranks(workdir):
    config = load_config(workdir / "tiny.json", ['loss.rank_weights={"32": 2}'])
    assert build_trainer(config, output_dir=str(workdir / "rw")).objective.rank_weights == {32: 2.0}
    config = load_config(workdir / "tiny.json", ['loss.rank_weights={"16": 1}'])
    with pytest.raises(ValueError, match=r"every trained MEL rank \[32\]"):
        build_trainer(config, output_dir=str(workdir / "rw16"))
    with pytest.raises(ValueError, match=r"loss.rank_weights must map integers"):
        load_config(workdir / "tiny.json", ['loss.rank_weights={"all": 1}'])


def test_bf16_autocast_training_runs(workdir):
    config = load_config(workdir / "tiny.json", ["training.max_steps=6", "training.bf16=true", "export.hub=false"])
    trainer = build_trainer(config, output_dir=str(workdir / "bf16"))
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


@pytest.mark.slow
def test_zero2_resume_gives_the_same_weights_as_an_uninterrupted_run(one_process):
    """The released recipe's setting (ZeRO-2, 2 processes): stopped after the step-3 checkpoint and resumed from
    it (DeepSpeed's sharded optimizer state, the sampler position) == 6 steps straight. Constant LR, so the
    3-step run's schedule equals the first half of the 6-step one."""
    pytest.importorskip("deepspeed")
    workdir, _ = one_process
    common = [f"training.deepspeed={ROOT / 'configs' / 'deepspeed' / 'zero2.json'}"]
    common += ["training.lr_scheduler_type=constant", "training.save_steps=3"]
    straight = train_cli(workdir, "z2-straight", 2, [*common, "training.max_steps=6"])
    three = train_cli(workdir, "z2-resumed", 2, [*common, "training.max_steps=3"])
    resume = str(workdir / "z2-resumed" / "checkpoint-3")
    resumed = train_cli(workdir, "z2-resumed", 2, [*common, "training.max_steps=6"], resume=resume)
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(straight[key], resumed[key], atol=1e-6, rtol=0, msg=key)
    assert (three["mel.V"] - resumed["mel.V"]).abs().max() > 1e-4  # the resumed run did train steps 4-6


ZERO3_LOAD = """
import json, sys
import deepspeed, torch
from transformers import AutoModel, TrainingArguments

deepspeed.init_distributed(dist_backend="gloo")  # on GPUs accelerate starts DeepSpeed's process group itself
# TrainingArguments with a stage-3 config made (and kept) first: from_pretrained builds the model under zero.Init
args = TrainingArguments(sys.argv[2], deepspeed=sys.argv[3], use_cpu=True, ddp_backend="gloo", report_to="none")
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
assert model.mel.U.numel() == 0 and tuple(model.mel.U.ds_shape) == (model.config.vocab_size, model.config.mel_rank)
with deepspeed.zero.GatheredParameters(list(model.parameters())):
    embeddings = model.encode(["cat dog", "sun moon"], layers=2).tolist()
if torch.distributed.get_rank() == 0:
    print(json.dumps(embeddings))
del model
from mlembed import distributed
left = distributed.close()  # gloo threads alive at the interpreter's exit can abort the finished run (SIGABRT)
assert not left, left
"""


@pytest.mark.slow
def test_hub_folder_loads_under_zero3_init(tmp_path):
    """Fine-tuning a Hub model with ZeRO-3 (TrainingArguments before from_pretrained): the factors in
    mel.safetensors are loaded into the partitioned parameters, giving the embeddings of a plain load."""
    pytest.importorskip("deepspeed")
    import os
    import subprocess
    import sys

    from mlembed.export import convert, hub
    from tests.conftest import tiny_model

    model = tiny_model(mel_rank=16, seed=3)
    convert.save_folder(model, tmp_path / "ml", model.tokenizer)
    folder = hub.export_hub(tmp_path / "ml", tmp_path / "hub")
    expected = AutoModel.from_pretrained(folder, trust_remote_code=True).encode(["cat dog", "sun moon"], layers=2)
    (tmp_path / "load.py").write_text(ZERO3_LOAD)
    zero3 = ROOT / "configs" / "deepspeed" / "zero3.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]
    command += [str(free_port()), str(tmp_path / "load.py"), str(folder), str(tmp_path / "out"), str(zero3)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(got, torch.as_tensor(expected), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_fsdp_on_the_cpu_says_it_runs_as_plain_data_parallel(one_process):
    """accelerate runs FSDP on GPUs only (checked on one: bench/strategies.py); on the CPU the run says so."""
    workdir, one = one_process
    assert_same_weights(one, train_cli(workdir, "fsdp", 2, ["training.fsdp=true"]))
    log = (workdir / "fsdp.log").read_text()
    assert "FSDP on GPUs only" in log and "plain data parallel" in log


FSDP2_SAVE = """
import json, os, sys
sys.path[:0] = [sys.argv[2], os.path.join(sys.argv[2], "tests")]
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from conftest import tiny_model

dist.init_process_group("gloo", rank=0, world_size=1)
model = tiny_model(seed=5)
expected = model.encode(["cat dog"], layers=2).tolist()
for layer in model.backbone.layers:
    fully_shard(layer)
fully_shard(model)  # what accelerate does for `fsdp: true` (FSDP2): the model's class becomes FSDPMLEmbedModel
assert type(model).__name__ == "FSDPMLEmbedModel", type(model)
full = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in model.state_dict().items()}
model.save_pretrained(sys.argv[1], state_dict=full)  # the Trainer saves the gathered state dict like this
model.tokenizer.save_pretrained(sys.argv[1])
assert type(model).__name__ == "FSDPMLEmbedModel"
print(json.dumps(expected))
"""


@pytest.mark.slow
def test_fsdp2_model_saves_a_loadable_ml_embed_folder(tmp_path):
    """FSDP2 subclasses the model on the fly in torch's module; the save must still write our remote code."""
    import os
    import subprocess
    import sys

    (tmp_path / "save.py").write_text(FSDP2_SAVE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    command = [sys.executable, str(tmp_path / "save.py"), str(tmp_path / "out"), str(ROOT)]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "modeling_mlembed.py" in files and not any(name.startswith("_fsdp") for name in files), files
    auto_map = json.loads((tmp_path / "out" / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_mlembed.MLEmbedModel"
    model = AutoModel.from_pretrained(tmp_path / "out", trust_remote_code=True)
    expected = torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(torch.as_tensor(model.encode(["cat dog"], layers=2)), expected, atol=1e-6, rtol=0)


def test_recipe_continues_from_a_dense_folder_with_mel_added(workdir):
    """A plain fine-tune (a dense ML-Embed folder) as `model.base` with `model.mel_rank`: factorised by SVD."""
    dense = tiny_model(mel_rank=None, exit_layers=[1, 2, 4])
    dense.save_pretrained(workdir / "plain")
    tiny_tokenizer().save_pretrained(workdir / "plain")
    config = load_config(workdir / "tiny.json", [f"model.base={workdir / 'plain'}", "model.mel_rank=16"])
    model, _ = build_model(config)
    assert model.config.mel_rank == 16 and model.config.exit_layers == [1, 2, 4]
    want = torch.linalg.svd(dense.backbone.get_input_embeddings().weight.detach(), full_matrices=False)
    torch.testing.assert_close(model.mel.dense(16), (want.U[:, :16] * want.S[:16]) @ want.Vh[:16])
    config = load_config(workdir / "tiny.json", [f"model.base={workdir / 'plain'}", "model.mel_rank=null"])
    assert build_model(config)[0].mel is None  # no mel_rank: the folder as it is
    model.save_pretrained(workdir / "factorised")
    tiny_tokenizer().save_pretrained(workdir / "factorised")
    config = load_config(workdir / "tiny.json", [f"model.base={workdir / 'factorised'}", "model.mel_rank=8"])
    with pytest.raises(ValueError, match="is factorised at mel_rank=16"):
        build_model(config)


def test_frozen_layers_keep_every_shallow_setting_and_train_the_rest(workdir):
    """A second phase with `model.frozen_layers=2` on the tiny 4-layer model: layers <= 2 encode exactly as before
    at every rank, the full depth moves; out-of-range values are errors naming the range."""
    start = run(load_config(workdir / "tiny.json", ["training.max_steps=2", "export.hub=false"]))
    before = MLEmbedModel.from_pretrained(start).eval()
    overrides = [f"model.base={start}", "model.frozen_layers=2", "training.max_steps=3", "export.hub=false"]
    trainer = build_trainer(load_config(workdir / "tiny.json", overrides), output_dir=str(workdir / "phase2"))
    trainable = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all(".layers.2." in name or ".layers.3." in name for name in trainable)
    trainer.train()
    after = trainer.model.eval()
    texts = ["cat dog", "a longer text about birds", "x"]
    for rank in (8, 32):
        torch.testing.assert_close(
            after.encode(texts, layers=2, rank=rank), before.encode(texts, layers=2, rank=rank), rtol=0, atol=0
        )
    assert not np.allclose(after.encode(texts), before.encode(texts), atol=1e-4)
    for bad in (4, 9):
        config = load_config(workdir / "tiny.json", [f"model.frozen_layers={bad}"])
        with pytest.raises(ValueError, match=r"model.frozen_layers must be in 1..3 \(the model has 4 layers\)"):
            build_model(config)
    with pytest.raises(ValueError, match="model.frozen_layers must be an integer >= 0"):
        load_config(workdir / "tiny.json", ["model.frozen_layers=-1"])


@pytest.mark.parametrize("kind", ["lora", "adapter"])
def test_two_stage_recipe_trains_only_the_exit_modules(workdir, kind):
    """Stage 2 (`loss.stage: exits`) on a stage-1 body: only the exit modules train, the full setting gives the
    stage-1 body's vectors bit for bit (every rank and dim), exits without a module too; the module exits move."""
    stage1 = ["training.max_steps=2", "export.hub=false", "loss.mll=false"]
    body = run(load_config(workdir / "tiny.json", stage1))
    before = MLEmbedModel.from_pretrained(body).eval()
    spec = json.dumps({"kind": kind, "exits": [2], "rank": 4})
    overrides = [f"model.base={body}", f"model.exit_modules={spec}", "loss.stage=exits", "loss.self_distill=1.0"]
    overrides += ["training.max_steps=3", "export.hub=false"]
    trainer = build_trainer(load_config(workdir / "tiny.json", overrides), output_dir=str(workdir / "stage2"))
    trainable = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("exit_modules.2.") for name in trainable)
    assert trainer.objective.exits == [2] and trainer.objective.separate_exits
    trainer.train()
    after = trainer.model.eval()
    texts = ["cat dog", "a longer text about birds", "x"]
    for rank, dim in ((None, None), (8, 16)):
        for layers in (None, 1):
            torch.testing.assert_close(
                after.encode(texts, layers=layers, rank=rank, dim=dim),
                before.encode(texts, layers=layers, rank=rank, dim=dim),
                rtol=0,
                atol=0,
            )
    assert not np.allclose(after.encode(texts, layers=2), before.encode(texts, layers=2), atol=1e-5)
    np.testing.assert_array_equal(after.encode(texts, layers=2, use_exit_module=False), before.encode(texts, layers=2))


def test_two_stage_errors_name_what_is_expected(workdir):
    body = run(load_config(workdir / "tiny.json", ["training.max_steps=1", "export.hub=false"]))
    with pytest.raises(ValueError, match="loss.stage must be one of \\['all', 'exits'\\]"):
        load_config(workdir / "tiny.json", ["loss.stage=heads"])
    with pytest.raises(ValueError, match='loss.stage "exits" trains exit modules, but the model has none'):
        build_trainer(load_config(workdir / "tiny.json", [f"model.base={body}", "loss.stage=exits"]))
    spec = json.dumps({"kind": "lora", "exits": [4], "rank": 4})
    with pytest.raises(ValueError, match=r"exit_modules.exits must be .* below the last, from \[1, 2\]"):
        build_model(load_config(workdir / "tiny.json", [f"model.base={body}", f"model.exit_modules={spec}"]))
