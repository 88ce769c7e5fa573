"""The command line: every DESIGN command exists with an example in --help; bad input exits 2."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from knowlm.cli.main import COMMAND_MODULES, app

DESIGN_COMMANDS = [
    ["demo"], ["data", "prepare"], ["data", "inspect"], ["kg2instruct"], ["train", "pretrain"], ["train", "sft"],
    ["weights", "diff"], ["weights", "recover"], ["weights", "merge-lora"], ["weights", "convert-meta"],
    ["weights", "export-gguf"], ["weights", "export-mindspore"], ["weights", "download"], ["generate"], ["extract"],
    ["eval"], ["convert"], ["serve"], ["webui"], ["edit"], ["instruct", "generate"], ["instruct", "select"], ["bench"],
]


def knowlm(*args, stdin=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "knowlm", *args], input=stdin, capture_output=True, text=True, env=env, timeout=300)


def test_every_command_module_is_present():
    import importlib

    for name in COMMAND_MODULES:
        assert hasattr(importlib.import_module(name), "register"), name


@pytest.mark.parametrize("command", DESIGN_COMMANDS, ids=lambda c: " ".join(c))
def test_help_explains_with_an_example(command):
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Example" in result.output and "knowlm" in result.output


def test_missing_model_is_one_line_exit_2():
    result = knowlm("generate", "--model", "/no/such/dir", "--interactive")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: model directory not found: /no/such/dir"
    assert "Traceback" not in result.stderr


def test_unknown_template_and_malformed_cases_exit_2(tiny_model_dir, tmp_path):
    cases = tmp_path / "cases.jsonl"
    cases.write_text('{"instruction": "hi"}\nnot json\n')
    result = knowlm("generate", "-m", str(tiny_model_dir), "--cases", str(cases))
    assert result.returncode == 2 and "cases.jsonl:2: invalid JSON" in result.stderr
    assert not (tmp_path / "cases.out.jsonl").exists()
    result = knowlm("generate", "-m", str(tiny_model_dir), "--cases", str(cases), "--template", "vicuna")
    assert result.returncode == 2 and "unknown prompt template 'vicuna'" in result.stderr


def test_cases_and_interactive_end_to_end(tiny_model_dir, tmp_path):
    cases = tmp_path / "cases.jsonl"
    cases.write_text('{"id": "x", "instruction": "浙江大学在哪里？"}\n{"id": "y", "instruction": "Where is Warsaw?", "parameters": {"max_new_tokens": 2}}\n')
    result = knowlm("generate", "-m", str(tiny_model_dir), "--cases", str(cases), "--max-new-tokens", "5", "-o", str(tmp_path / "out.jsonl"))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["x", "y"] and rows[1]["num_tokens"] <= 2 and rows[0]["num_tokens"] <= 5
    chat = knowlm("generate", "-m", str(tiny_model_dir), "-i", "--max-new-tokens", "3", stdin="hello\n/set temperature 0.3\n/show\n")
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.count(">>> ") == 4 and '"temperature": 0.3' in chat.stdout
