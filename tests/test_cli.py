"""The command line's one convention: list forms, singular / plural flags, -o, --device / --dtype, light parsing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_model

from mlembed.cli import build_parser, main
from mlembed.cli import parse as parse_cli

MODEL_COMMANDS = ("encode", "convert", "eval", "train", "encode-corpus", "search")  # commands that run a model


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def subparser(name: str):
    actions = build_parser()._subparsers._group_actions[0].choices  # argparse keeps subparsers here
    return actions[name]


def options(name: str) -> set[str]:
    return {flag for action in subparser(name)._actions for flag in action.option_strings}


@pytest.mark.parametrize(
    "argv, field, expected",
    [
        (["convert", "b", "o", "--exit-layers", "1,2"], "exit_layers", [1, 2]),
        (["convert", "b", "o", "--exit-layers", "1", "2"], "exit_layers", [1, 2]),
        (["convert", "b", "o", "--dims", "8,16", "32"], "dims", [8, 16, 32]),
        (["eval", "m", "--data", "d", "--depths", "2", "3"], "depths", [2, 3]),
        (["eval", "m", "--data", "d", "--depths", "2,3"], "depths", [2, 3]),
        (["eval", "m", "--data", "d", "--ranks", "64,128"], "ranks", [64, 128]),
        (["mini", "--redo", "eval,demo"], "redo", ["eval", "demo"]),
        (["data", "debian", "out", "--languages", "en,pl", "de"], "languages", ["en", "pl", "de"]),
        (["data", "catalogues", "out", "--languages", "pl,de", "ja"], "languages", ["pl", "de", "ja"]),
        (["data", "catalogues", "out", "--packages", "sed,grep"], "packages", ["sed", "grep"]),
    ],
)
def test_every_list_option_takes_commas_and_spaces(argv, field, expected):
    assert getattr(parse(*argv), field) == expected


def test_list_option_errors_name_the_expected_form(capsys):
    with pytest.raises(SystemExit):
        parse("eval", "m", "--data", "d", "--depths", "two")
    assert "expected integers such as 2,3 or 2 3, got 'two'" in capsys.readouterr().err


def test_singular_flags_take_one_setting():
    args = parse("encode", "m", "text", "--layers", "3", "--dim", "96", "--rank", "64")
    assert (args.layers, args.dim, args.rank) == (3, 96, 64)
    with pytest.raises(SystemExit):
        parse("encode", "m", "text", "--layers", "3", "4")  # '4' is not a flag: a singular flag takes one value
    assert "--layers" not in options("eval")  # eval takes sets: --depths / --dims / --ranks


def test_output_and_runtime_flags_are_the_same_everywhere():
    for name in ("encode", "convert", "export", "train", "eval", "cards"):
        assert {"-o", "--output"} <= options(name), name
    for name in MODEL_COMMANDS:
        assert {"--device", "--dtype"} <= options(name), name
    assert "--dtype" in options("export")
    assert parse("convert", "b", "-o", "x").output.name == "x" and parse("convert", "b", "x").out == "x"


def test_two_different_outputs_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["convert", str(tmp_path), str(tmp_path / "a"), "-o", str(tmp_path / "b")])
    assert "two outputs given" in capsys.readouterr().err


def test_out_may_follow_the_flags(capsys):
    assert parse_cli(["convert", "base", "--mel-rank", "16", "out"]).out == "out"
    assert parse_cli(["convert", "base", "out", "--mel-rank", "16"]).out == "out"
    with pytest.raises(SystemExit):
        parse_cli(["convert", "base", "--mel-rank", "16", "out", "extra"])
    assert "unrecognized arguments: out extra" in capsys.readouterr().err


def test_resume_is_a_plain_flag():
    assert parse("train", "--config", "c.json", "--resume").resume is True
    assert parse("train", "--config", "c.json").resume is False
    assert parse("train", "--config", "c.json", "--resume-from", "run/checkpoint-3").resume_from == "run/checkpoint-3"


def test_pipeline_builders_are_subcommands():
    assert {"mini", "cards", "data"} <= set(build_parser()._subparsers._group_actions[0].choices)
    assert parse("mini", "--smoke").smoke is True


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300)


def test_help_does_not_import_torch():
    code = (
        "import sys\nfrom mlembed.cli import main\n"
        "for argv in (['--help'], ['mini', '--help'], ['train', '--help'], ['data', 'debian', '--help'],\n"
        "             ['data', 'catalogues', '--help'], ['encode-corpus', '--help'], ['index', '--help'],\n"
        "             ['search', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "heavy = ('torch', 'transformers', 'datasets', 'ray', 'qdrant_client')\n"
        "print('HEAVY', [m for m in heavy if m in sys.modules])"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


def test_mlembed_is_the_one_entry_point():
    """`python -m mlembed.cli` (for `accelerate launch -m`, `torchrun -m`) runs `mlembed`; no other module of the
    package runs as a script (a lower layer that imported the CLI to do so would be an upward import)."""
    proc = subprocess.run(
        [sys.executable, "-m", "mlembed.cli", "--help"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "usage: mlembed" in proc.stdout, proc.stderr
    scripts = [
        path.relative_to(ROOT).as_posix()
        for path in sorted((ROOT / "mlembed").rglob("*.py"))
        if path.name == "__main__.py" or '__name__ == "__main__"' in path.read_text(encoding="utf-8")
    ]
    assert scripts == ["mlembed/cli/__main__.py"]


def test_a_missing_extra_is_one_line_naming_it(tmp_path):
    """What a wheel user without the `train` extra sees (datasets made unimportable here)."""
    code = (
        "import sys\nsys.modules['datasets'] = None\nsys.modules['accelerate'] = None\n"
        "from mlembed.cli import main\nmain(['train', '--config', sys.argv[1]])"
    )
    config = tmp_path / "c.json"
    config.write_text(
        json.dumps({"model": {"base": "x"}, "data": {"train": ["x.parquet"]}, "training": {"output_dir": "o"}})
    )
    proc = run_python(code, str(config))
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().splitlines()[-1] == 'mlembed train: needs the "train" extra: pip install "ml-embed[train]"'
    )


def test_the_ray_engine_without_ray_is_one_line_naming_the_corpus_extra(tmp_path):
    code = "import sys\nsys.modules['ray'] = None\nfrom mlembed.cli import main\nmain(sys.argv[1:])"
    proc = run_python(code, "encode-corpus", "m", "in.jsonl", str(tmp_path / "o"), "--engine", "ray")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        'mlembed encode-corpus: needs the "corpus" extra: pip install "ml-embed[corpus]"'
    )


def test_encode_runs_the_model_on_the_chosen_dtype(tmp_path, capsys):
    model = tiny_model()
    model.save_pretrained(tmp_path / "m")
    model.tokenizer.save_pretrained(tmp_path / "m")
    capsys.readouterr()
    main(["encode", str(tmp_path / "m"), "abc", "--dtype", "bfloat16", "--device", "cpu", "--dim", "8"])
    bf16 = json.loads(capsys.readouterr().out)
    main(["encode", str(tmp_path / "m"), "abc", "--dim", "8"])
    fp32 = json.loads(capsys.readouterr().out)
    assert len(bf16[0]) == len(fp32[0]) == 8 and bf16 != fp32  # bf16 arithmetic really ran
    assert max(abs(a - b) for a, b in zip(bf16[0], fp32[0])) < 0.05


def test_results_alone_on_stdout(tmp_path, capsys, monkeypatch):
    """`mlembed encode m text | jq`: whatever a library prints while the command runs (DeepSpeed logs to stdout
    when something imports it) goes to stderr; stdout holds the JSON only."""
    import modeling_mlembed

    model = tiny_model()
    model.save_pretrained(tmp_path / "m")
    model.tokenizer.save_pretrained(tmp_path / "m")
    encode = modeling_mlembed.MLEmbedModel.encode

    def chatty(self, *args, **kwargs):
        print("[WARNING] [real_accelerator.py] Setting accelerator to CPU.")
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(modeling_mlembed.MLEmbedModel, "encode", chatty)
    capsys.readouterr()
    main(["encode", str(tmp_path / "m"), "abc"])
    out, err = capsys.readouterr()
    assert len(json.loads(out)[0]) == model.config.hidden_size
    assert "Setting accelerator to CPU" in err
