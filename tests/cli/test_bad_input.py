"""Every bad input, per command: one ``error:`` line on stderr, exit 2, nothing written, no traceback.

One table per class of mistake a new user makes (existing outputs, outputs that cannot be, an output
that is an input, non-UTF-8 files, malformed schemas, empty inputs, files that are not IE records,
unsafe serve settings, mistyped model paths). Every row fails before a model is loaded, so the whole
table runs in seconds.
"""

from __future__ import annotations

import json
import re
import socket

import pytest

from knowlm import resources

GBK_LINE = "马云创办了阿里巴巴。".encode("gbk")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace of good and bad files (read-only for the tests)."""
    root = tmp_path_factory.mktemp("ws")
    texts = [{"id": "1", "text": "马云创办了阿里巴巴。"}]
    gold = [{"id": "1", "text": texts[0]["text"], "relations": [{"head": "马云", "relation": "创办", "tail": "阿里巴巴"}]}]
    (root / "texts.jsonl").write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    (root / "gold.jsonl").write_text("".join(json.dumps(g, ensure_ascii=False) + "\n" for g in gold), encoding="utf-8")
    (root / "foo.jsonl").write_text('{"foo": 1}\n{"bar": 2}\n')
    (root / "empty.jsonl").write_text("")
    (root / "gbk.jsonl").write_bytes(b'{"id": "0", "text": "ok", "relations": [], "instruction": "ok", "output": "ok"}\n'
                                     b'{"id": "1", "text": "' + GBK_LINE + b'"}\n')
    (root / "gbk_kg.jsonl").write_bytes(b'{"id": "a", "name": "A", "type": "t", "aliases": ["A"]}\n{"id": "b", "name": "' + GBK_LINE + b'"}\n')
    (root / "gbk.json").write_bytes(b'[{"prompt": "' + GBK_LINE + b'"}]\n')
    (root / "gbk.txt").write_bytes(b"EU B-ORG\n" + GBK_LINE + b" O\n")
    (root / "conll.txt").write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n")
    (root / "cases.jsonl").write_text('{"instruction": "hi"}\n')
    (root / "sft.jsonl").write_text('{"instruction": "Say hi", "input": "", "output": "hi there"}\n')
    (root / "empty_kg.jsonl").write_text('{"id": "a", "name": "A", "type": "t", "aliases": ["A"]}\n')
    (root / "out.jsonl").write_text("old\n")
    (root / "out.bin").write_bytes(b"old")
    (root / "blocker").write_text("a file")
    (root / "adir").mkdir()
    (root / "adir" / "notes.txt").write_text("mine")
    (root / "emptydir").mkdir()
    return root


def one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(pattern, lines[0]), (pattern, lines[0])


def fill(args, ws, model) -> list[str]:
    return [str(a).replace("{ws}", str(ws)).replace("{model}", str(model)) for a in args]


def run_table(cli, ws, tiny_model_dir, rows):
    for args, pattern in rows:
        result = cli(*fill(args, ws, tiny_model_dir))
        one_line_error(result, pattern)
    assert (ws / "out.jsonl").read_text() == "old\n" and (ws / "adir" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (ws / "adir").iterdir()) == ["notes.txt"]


EXISTS = r"already exists and is not empty; pass --overwrite"
EXISTING_OUTPUT = [
    (["convert", "conll2003", "{ws}/conll.txt", "{ws}/out.jsonl"], EXISTS),
    (["convert", "sft", "{ws}/gold.jsonl", "{ws}/out.jsonl", "--task", "re"], EXISTS),
    (["extract", "-m", "{model}", "--task", "re", "--schema", '["创办"]', "-i", "{ws}/texts.jsonl", "-o", "{ws}/out.jsonl"], EXISTS),
    (["eval", "--gold", "{ws}/gold.jsonl", "--pred", "{ws}/gold.jsonl", "--report", "{ws}/out.jsonl"], EXISTS),
    (["eval", "--gold", "{ws}/gold.jsonl", "--pred", "{ws}/gold.jsonl", "--plot", "{ws}/out.jsonl"], EXISTS),
    (["generate", "-m", "{model}", "--cases", "{ws}/cases.jsonl", "-o", "{ws}/out.jsonl"], EXISTS),
    (["data", "prepare", "-i", "{ws}/texts.jsonl", "--tokenizer", "{model}", "-o", "{ws}/out"], r"out\.bin: the file " + EXISTS),
    (["data", "inspect", "{ws}/nodata", "--plot", "{ws}/out.jsonl"], EXISTS),
    (["data", "merge", "{ws}/a", "{ws}/b", "-o", "{ws}/out"], EXISTS),
    (["kg2instruct", "--corpus", str(resources.corpus_path()), "--kg", str(resources.kg_path()), "--output", "{ws}/adir"], EXISTS),
    (["instruct", "select", "-i", "{ws}/sft.jsonl", "-o", "{ws}/out.jsonl"], EXISTS),
    (["instruct", "generate", "--method", "kg2instruct", "--seeds", str(resources.corpus_path()), "--kg", str(resources.kg_path()),
      "-o", "{ws}/out.jsonl"], EXISTS),
    (["weights", "merge-lora", "--base", "{model}", "--adapter", "{ws}/adapter", "--output", "{ws}/adir"], EXISTS),
    (["weights", "diff", "--base", "{model}", "--target", "{model}", "--output", "{ws}/adir"], EXISTS),
    (["weights", "recover", "--base", "{model}", "--diff", "{ws}/d", "--output", "{ws}/adir"], EXISTS),
    (["weights", "convert-meta", "--input", "{ws}/meta", "--output", "{ws}/adir"], EXISTS),
    (["weights", "export-gguf", "-m", "{model}", "-o", "{ws}/out.jsonl"], EXISTS),
    (["weights", "export-mindspore", "-m", "{model}", "-o", "{ws}/out.jsonl"], EXISTS),
    (["weights", "download", "zjunlp/OneKE", "--output", "{ws}/adir"], EXISTS),
    (["edit", "-m", "{model}", "--requests", "{ws}/gbk.json", "--output", "{ws}/adir"], EXISTS),
    (["edit", "-m", "{model}", "--requests", "{ws}/gbk.json", "--metrics", "{ws}/out.jsonl"], EXISTS),
    (["demo", "--workdir", "{ws}/adir"], EXISTS),
    (["train", "sft", "--model", "{model}", "--data", "{ws}/sft.jsonl", "--output", "{ws}/adir", "--max-steps", "1"], EXISTS),
    (["train", "pretrain", "--model", "{model}", "--data", "{ws}/nodata", "--output", "{ws}/adir", "--max-steps", "1"], EXISTS),
]


def test_existing_outputs_are_refused_without_overwrite(cli, ws, tiny_model_dir):
    run_table(cli, ws, tiny_model_dir, EXISTING_OUTPUT)


IS_DIR = r"is a directory; give a file name"
UNDER_FILE = r"blocker is a file, not a directory"
UNUSABLE_OUTPUT = [
    (["convert", "conll2003", "{ws}/conll.txt", "{ws}/adir"], IS_DIR),
    (["extract", "-m", "{model}", "--task", "re", "--schema", '["创办"]', "-i", "{ws}/texts.jsonl", "-o", "{ws}/adir"], IS_DIR),
    (["eval", "--gold", "{ws}/gold.jsonl", "--pred", "{ws}/gold.jsonl", "--report", "{ws}/adir"], IS_DIR),
    (["eval", "--gold", "{ws}/gold.jsonl", "--pred", "{ws}/gold.jsonl", "--plot", "{ws}/emptydir"], IS_DIR),
    (["generate", "-m", "{model}", "--cases", "{ws}/cases.jsonl", "-o", "{ws}/emptydir"], IS_DIR),
    (["data", "inspect", "{ws}/nodata", "--plot", "{ws}/emptydir"], IS_DIR),
    (["instruct", "select", "-i", "{ws}/sft.jsonl", "-o", "{ws}/emptydir"], IS_DIR),
    (["weights", "export-gguf", "-m", "{model}", "-o", "{ws}/emptydir"], IS_DIR),
    (["convert", "conll2003", "{ws}/conll.txt", "{ws}/blocker/x.jsonl"], UNDER_FILE),
    (["extract", "-m", "{model}", "--task", "re", "--schema", '["创办"]', "-i", "{ws}/texts.jsonl", "-o", "{ws}/blocker/x.jsonl"], UNDER_FILE),
    (["data", "prepare", "-i", "{ws}/texts.jsonl", "--tokenizer", "{model}", "-o", "{ws}/blocker/x"], UNDER_FILE),
    (["kg2instruct", "--corpus", str(resources.corpus_path()), "--kg", str(resources.kg_path()), "--output", "{ws}/blocker/d"], UNDER_FILE),
    (["demo", "--workdir", "{ws}/blocker/d"], UNDER_FILE),
    (["demo", "--workdir", "{ws}/blocker"], r"--workdir .*blocker is a file; give a directory"),
    (["weights", "merge-lora", "--base", "{model}", "--adapter", "{ws}/adapter", "--output", "{ws}/blocker"], r"is a file; give a directory"),
]


def test_outputs_that_cannot_be_written_are_named_before_any_work(cli, ws, tiny_model_dir):
    run_table(cli, ws, tiny_model_dir, UNUSABLE_OUTPUT)


IS_INPUT = r"is also an input of this command"
OUTPUT_IS_INPUT = [
    (["convert", "conll2003", "{ws}/conll.txt", "{ws}/conll.txt", "--overwrite"], IS_INPUT),
    (["extract", "-m", "{model}", "--task", "re", "--schema", '["创办"]', "-i", "{ws}/texts.jsonl", "-o", "{ws}/texts.jsonl", "--overwrite"], IS_INPUT),
    (["eval", "--gold", "{ws}/gold.jsonl", "--pred", "{ws}/texts.jsonl", "--report", "{ws}/gold.jsonl", "--overwrite"], IS_INPUT),
    (["instruct", "select", "-i", "{ws}/sft.jsonl", "-o", "{ws}/sft.jsonl", "--overwrite"], IS_INPUT),
    (["generate", "-m", "{model}", "--cases", "{ws}/cases.jsonl", "-o", "{ws}/cases.jsonl", "--overwrite"], IS_INPUT),
    (["weights", "merge-lora", "--base", "{model}", "--adapter", "{ws}/adapter", "--output", "{model}", "--overwrite"], IS_INPUT),
    (["train", "sft", "--model", "{model}", "--data", "{ws}/sft.jsonl", "--output", "{model}", "--overwrite"], IS_INPUT),
    (["kg2instruct", "--corpus", "{ws}/texts.jsonl", "--kg", str(resources.kg_path()), "--output", "{ws}", "--overwrite"], r"holds the input"),
    (["eval", "--gold", "{ws}/gold.jsonl", "--pred", "{ws}/gold.jsonl", "--report", "{ws}/r.json", "--plot", "{ws}/r.json"],
     r"--report and --plot name the same file"),
]


def test_an_input_is_never_overwritten(cli, ws, tiny_model_dir):
    before = {p.name: p.read_bytes() for p in ws.iterdir() if p.is_file()}
    run_table(cli, ws, tiny_model_dir, OUTPUT_IS_INPUT)
    assert {p.name: p.read_bytes() for p in ws.iterdir() if p.is_file()} == before


NOT_UTF8 = r"gbk(_kg)?\.{ext}:{line}: not UTF-8 text \(byte 0x[0-9a-f]{{2}} at column \d+\); convert the file to UTF-8"
NON_UTF8_INPUT = [
    (["extract", "-m", "{model}", "--task", "re", "--schema", '["创办"]', "-i", "{ws}/gbk.jsonl", "-o", "{ws}/o1.jsonl"], ("jsonl", 2)),
    (["eval", "--gold", "{ws}/gbk.jsonl", "--pred", "{ws}/gold.jsonl"], ("jsonl", 2)),
    (["eval", "--gold", "{ws}/gold.jsonl", "--pred", "{ws}/gbk.jsonl"], ("jsonl", 2)),
    (["kg2instruct", "--corpus", "{ws}/gbk.jsonl", "--kg", str(resources.kg_path()), "--output", "{ws}/o2"], ("jsonl", 2)),
    (["kg2instruct", "--corpus", str(resources.corpus_path()), "--kg", "{ws}/gbk_kg.jsonl", "--output", "{ws}/o2"], ("jsonl", 2)),
    (["convert", "sft", "{ws}/gbk.jsonl", "{ws}/o3.jsonl", "--task", "re"], ("jsonl", 2)),
    (["convert", "conll2003", "{ws}/gbk.txt", "{ws}/o3.jsonl"], ("txt", 2)),
    (["generate", "-m", "{model}", "--cases", "{ws}/gbk.jsonl", "-o", "{ws}/o4.jsonl"], ("jsonl", 2)),
    (["instruct", "select", "-i", "{ws}/gbk.jsonl", "-o", "{ws}/o5.jsonl"], ("jsonl", 2)),
    (["edit", "-m", "{model}", "--requests", "{ws}/gbk.json"], ("json", 1)),
]


@pytest.mark.parametrize("args, where", NON_UTF8_INPUT, ids=lambda v: " ".join(v[:2]) if isinstance(v, list) else None)
def test_non_utf8_inputs_name_file_and_line(cli, ws, tiny_model_dir, args, where):
    ext, line = where
    one_line_error(cli(*fill(args, ws, tiny_model_dir)), NOT_UTF8.format(ext=ext, line=line))
    assert not list(ws.glob("o[0-9]*"))


def test_train_sft_refuses_non_utf8_data(cli, ws, tiny_model_dir, tmp_path):
    result = cli("train", "sft", "--model", tiny_model_dir, "--data", ws / "gbk.jsonl", "--output", tmp_path / "run", "--max-steps", "1")
    one_line_error(result, NOT_UTF8.format(ext="jsonl", line=2))


MALFORMED_SCHEMA = [
    (["extract", "-m", "{model}", "--task", "re", "--schema", '["a", "b"', "-i", "{ws}/texts.jsonl", "-o", "{ws}/o.jsonl"],
     r"schema: invalid JSON \(.* at column \d+\): \[\"a\", \"b\""),
    (["extract", "-m", "{model}", "--task", "ner", "--schema", '{"person": ', "-i", "{ws}/texts.jsonl", "-o", "{ws}/o.jsonl"],
     r"schema: invalid JSON"),
    (["extract", "-m", "{model}", "--task", "ner", "--schema", "[]", "-i", "{ws}/texts.jsonl", "-o", "{ws}/o.jsonl"],
     r"expected a non-empty list"),
    (["extract", "-m", "{model}", "--task", "ner", "--schema", "[1, 2]", "-i", "{ws}/texts.jsonl", "-o", "{ws}/o.jsonl"],
     r"schema items must be non-empty strings"),
    (["convert", "sft", "{ws}/gold.jsonl", "{ws}/o.jsonl", "--task", "re", "--schema", '["创办"'], r"schema: invalid JSON"),
    (["extract", "-m", "{model}", "--task", "re", "--schema", '["创办"]', "-i", "{ws}/texts.jsonl", "-o", "{ws}/o.jsonl", "--ground"],
     r"--ground needs --constrained and the hf backend"),
]


def test_malformed_schemas_are_errors_not_items(cli, ws, tiny_model_dir):
    run_table(cli, ws, tiny_model_dir, MALFORMED_SCHEMA)


EMPTY_INPUT = [
    (["extract", "-m", "{model}", "--task", "re", "--schema", '["创办"]', "-i", "{ws}/empty.jsonl", "-o", "{ws}/e1.jsonl"],
     r"empty\.jsonl: no texts to extract from .*--allow-empty"),
    (["eval", "--gold", "{ws}/gold.jsonl", "--pred", "{ws}/empty.jsonl"], r"empty\.jsonl: no prediction records \(--allow-empty"),
    (["eval", "--gold", "{ws}/empty.jsonl", "--pred", "{ws}/gold.jsonl"], r"empty\.jsonl: no gold records"),
    (["convert", "conll2003", "{ws}/empty.jsonl", "{ws}/e2.jsonl"], r"nothing converted .*--allow-empty"),
    (["convert", "sft", "{ws}/empty.jsonl", "{ws}/e2.jsonl", "--task", "re"], r"no IE records .*--allow-empty"),
    (["kg2instruct", "--corpus", str(resources.corpus_path()), "--kg", "{ws}/empty_kg.jsonl", "--output", "{ws}/e3"],
     r"the knowledge graph holds no triples"),
    (["kg2instruct", "--corpus", "{ws}/empty.jsonl", "--kg", str(resources.kg_path()), "--output", "{ws}/e3"],
     r"the corpus holds no documents"),
    (["generate", "-m", "{model}", "--cases", "{ws}/empty.jsonl"], r"no cases found"),
    (["instruct", "select", "-i", "{ws}/empty.jsonl", "-o", "{ws}/e4.jsonl"], r"no instruction records to select from.*--allow-empty"),
    (["train", "sft", "--model", "{model}", "--data", "{ws}/empty.jsonl", "--output", "{ws}/e5"], r"no instruction records"),
]


def test_empty_inputs_are_refused_unless_allowed(cli, ws, tiny_model_dir, tmp_path):
    run_table(cli, ws, tiny_model_dir, EMPTY_INPUT)
    assert not list(ws.glob("e[0-9]*"))
    out = tmp_path / "empty_pred.jsonl"
    allowed = cli("extract", "-m", "/no/model/needed", "--task", "re", "--schema", '["创办"]', "-i", ws / "empty.jsonl",
                  "-o", out, "--allow-empty")
    assert allowed.exit_code == 0 and out.read_text() == "" and "--allow-empty" in allowed.stdout
    scored = cli("eval", "--gold", ws / "gold.jsonl", "--pred", out, "--allow-empty")
    assert scored.exit_code == 0 and "relation F1 0.00" in scored.stdout
    converted = cli("convert", "conll2003", ws / "empty.jsonl", tmp_path / "c.jsonl", "--allow-empty")
    assert converted.exit_code == 0 and (tmp_path / "c.jsonl").read_text() == ""


NOT_IE = [
    (["eval", "--gold", "{ws}/foo.jsonl", "--pred", "{ws}/gold.jsonl"], r"foo\.jsonl:1: not an IE record \(needs entities, relations, events; has keys foo\)"),
    (["eval", "--gold", "{ws}/gold.jsonl", "--pred", "{ws}/foo.jsonl"], r"foo\.jsonl:1: not an IE record"),
    (["eval", "--gold", "{ws}/gold.jsonl", "--pred", "{ws}/sft.jsonl"], r"sft\.jsonl:1: not an IE record"),
    (["convert", "sft", "{ws}/sft.jsonl", "{ws}/o.jsonl", "--task", "re"], r"no re types found|not an IE record"),
]


def test_files_that_are_not_ie_records_are_refused(cli, ws, tiny_model_dir, tmp_path):
    run_table(cli, ws, tiny_model_dir, NOT_IE)
    other = tmp_path / "other_ids.jsonl"
    other.write_text('{"id": "zz", "relations": []}\n')
    one_line_error(cli("eval", "--gold", ws / "gold.jsonl", "--pred", other), r"no prediction id in .* matches a gold id")


@pytest.fixture
def busy_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


@pytest.mark.parametrize("command", ["serve", "webui"])
def test_busy_port_is_refused_before_loading_or_banner(cli, tiny_model_dir, busy_port, command):
    result = cli(command, "-m", tiny_model_dir, "--port", busy_port)
    one_line_error(result, rf"--port {busy_port}: 127\.0\.0\.1:{busy_port} is already in use")
    assert "http://" not in result.stdout


def test_empty_api_key_is_refused_not_auth_off(cli, tiny_model_dir, monkeypatch):
    one_line_error(cli("serve", "-m", tiny_model_dir, "--api-key", ""), r"--api-key is empty")
    monkeypatch.setenv("KNOWLM_API_KEY", "  ")
    one_line_error(cli("serve", "-m", tiny_model_dir), r"--api-key is empty")


def test_local_looking_model_paths_never_go_to_the_hub(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the real rule, not the offline shortcut
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # were the hub asked, this would fail slowly, not say "not found"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo-work").mkdir()
    for name in ("./model", "/no/such/model", "a/b/c", "demo-work/model", "~/no-such-model"):
        result = cli("generate", "-m", name, "-i")
        one_line_error(result, rf"^error: model directory not found: {re.escape(name)}$")
    one_line_error(cli("data", "prepare", "-i", tmp_path / "demo-work", "--tokenizer", "demo-work/tok", "-o", "x"),
                   r"input file not found")


def test_version_and_env(cli):
    import knowlm

    result = cli("--version")
    assert (result.exit_code, result.stdout) == (0, f"knowlm {knowlm.__version__}\n")
    env = cli("env", "--json")
    info = json.loads(env.stdout)
    assert env.exit_code == 0 and info["knowlm"] == knowlm.__version__
    assert set(info["packages"]) >= {"torch", "transformers", "peft"} and "cuda_available" in info["devices"]
    assert set(info["extras"]) >= {"serve", "export", "constrained", "gpu"}
    text = cli("env").stdout
    assert "- torch version: " in text and "- CUDA available: " in text and "- extra [serve]: " in text


def test_overwrite_replaces_only_own_files(cli, tiny_model_dir, tmp_path):
    """`weights merge-lora --overwrite` into a directory holding a user's notes: the notes survive, and no
    hidden copy of the old output is left beside it."""
    from tests.weights.weights_helpers import peft_adapter

    adapter = tmp_path / "adapter"
    peft_adapter(tiny_model_dir, adapter)
    out = tmp_path / "merged"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "model-00002-of-00002.safetensors").write_text("stale shard of an earlier merge")
    result = cli("weights", "merge-lora", "--base", tiny_model_dir, "--adapter", adapter, "--output", out)
    one_line_error(result, EXISTS)
    result = cli("weights", "merge-lora", "--base", tiny_model_dir, "--adapter", adapter, "--output", out, "--overwrite")
    assert result.exit_code == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert "notes.txt" in names and "model-00002-of-00002.safetensors" not in names and "knowlm.json" in names
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "merged"]


def test_train_overwrite_replaces_only_model_files(cli, ws, tiny_model_dir, tmp_path):
    """A run with --overwrite into a directory with a stale shard of an earlier full run and a user's notes:
    the model files are the new run's, the notes stay, and nothing temporary is left (in or beside it)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "model-00002-of-00002.safetensors").write_text("stale")
    result = cli("train", "sft", "--model", tiny_model_dir, "--data", ws / "sft.jsonl", "--output", out, "--max-steps", "1",
                 "--overwrite")
    assert result.exit_code == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert "notes.txt" in names and "adapter_model.safetensors" in names and "knowlm.json" in names
    assert "model-00002-of-00002.safetensors" not in names
    assert not [n for n in names if n.startswith(".tmp-")] and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


USAGE = [
    (["extract", "-m", "{model}", "--task", "re", "--schema", '["a"]', "-i", "{ws}/texts.jsonl", "-o", "{ws}/u.jsonl", "--batch-size", "abc"],
     r"^error: Invalid value for '--batch-size': .* \(see 'knowlm extract --help'\)$"),
    (["convert"], r"^error: Missing argument 'format'\. \(see 'knowlm convert --help'\)$"),
    (["extract", "--no-such-flag"], r"^error: No such option: --no-such-flag.*\(see 'knowlm extract --help'\)$"),
    (["no-such-command"], r"^error: No such command 'no-such-command'\. \(see 'knowlm --help'\)$"),
    (["kg2instruct", "--corpus", "{ws}/texts.jsonl", "--kg", "{ws}/empty_kg.jsonl", "--output", "{ws}/u", "--seed", "x"],
     r"Invalid value for '--seed'"),
    (["serve", "-m", "{model}", "--port", "99999"], r"--port must be in 1\.\.65535, got 99999"),
    (["train", "sft", "--model", "{model}", "--data", "{ws}/sft.jsonl", "--output", "{ws}/u", "--seed", "-1"],
     r"--seed must be in 0\.\.4294967295, got -1"),
]


def test_usage_errors_are_one_line_too(cli, ws, tiny_model_dir):
    """A wrong type, an unknown option or a missing argument: one line naming it and where to look, not a usage box."""
    run_table(cli, ws, tiny_model_dir, USAGE)
