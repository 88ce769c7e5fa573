"""The command line: every DESIGN command exists with an example in --help; bad input exits 2."""

import json

import pytest

from knowlm.cli.main import COMMAND_MODULES

DESIGN_COMMANDS = [
    ["demo"], ["data", "prepare"], ["data", "inspect"], ["kg2instruct"], ["train", "pretrain"], ["train", "sft"],
    ["weights", "diff"], ["weights", "recover"], ["weights", "merge-lora"], ["weights", "convert-meta"],
    ["weights", "export-gguf"], ["weights", "export-mindspore"], ["weights", "download"], ["generate"], ["extract"],
    ["eval"], ["convert"], ["serve"], ["webui"], ["edit"], ["instruct", "generate"], ["instruct", "select"], ["bench"],
]


def test_every_command_module_is_present():
    import importlib

    for name in COMMAND_MODULES:
        assert hasattr(importlib.import_module(name), "register"), name


@pytest.mark.parametrize("command", DESIGN_COMMANDS, ids=lambda c: " ".join(c))
def test_help_explains_with_an_example(cli, command):
    result = cli(*command, "--help")
    assert result.exit_code == 0, result.stderr
    assert "Example" in result.stdout and "knowlm" in result.stdout


def test_missing_model_is_one_line_exit_2(cli):
    result = cli("generate", "--model", "/no/such/dir", "--interactive")
    assert (result.exit_code, result.stderr) == (2, "error: model directory not found: /no/such/dir\n")


def test_unknown_template_and_malformed_cases_exit_2(cli, tiny_model_dir, tmp_path):
    cases = tmp_path / "cases.jsonl"
    cases.write_text('{"instruction": "hi"}\nnot json\n')
    result = cli("generate", "-m", tiny_model_dir, "--cases", cases)
    assert result.exit_code == 2 and result.stderr.splitlines()[-1] == f"error: {cases}:2: invalid JSON in cases file (Expecting value)"
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "cases.out.jsonl").exists()
    result = cli("generate", "-m", tiny_model_dir, "--cases", cases, "--template", "vicuna")
    assert (result.exit_code, result.stderr) == (2, "error: unknown prompt template 'vicuna'; choose one of: alpaca, llama2, chatml, raw, chat_template\n")


def test_cases_and_interactive_end_to_end(cli, tiny_model_dir, tmp_path):
    cases = tmp_path / "cases.jsonl"
    cases.write_text('{"id": "x", "instruction": "浙江大学在哪里？"}\n{"id": "y", "instruction": "Where is Warsaw?", "parameters": {"max_new_tokens": 2}}\n')
    result = cli("generate", "-m", tiny_model_dir, "--cases", cases, "--max-new-tokens", "5", "-o", tmp_path / "out.jsonl")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["x", "y"] and rows[1]["num_tokens"] <= 2 and rows[0]["num_tokens"] <= 5
    chat = cli("generate", "-m", tiny_model_dir, "-i", "--max-new-tokens", "3", input="hello\n/set temperature 0.3\n/show\n")
    assert chat.exit_code == 0, chat.stderr
    assert chat.stdout.count(">>> ") == 4 and '"temperature": 0.3' in chat.stdout
