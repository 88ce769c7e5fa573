"""The extraction pipeline: constrained decoding with the tiny model, chunking and merging,
and `knowlm extract` + `knowlm eval` end to end."""

import json
import re

import pytest

from knowlm.ie import extract_texts, gold_output
from knowlm.ie.constrained import Bounds, GrammarCache, json_schema
from knowlm.ie.extract import chunk_text, sentences
from knowlm.infer import DecodingParams, Generation, Generator


@pytest.fixture(autouse=True)
def _one_thread():
    """A tiny model gains nothing from intra-op threads, and on a busy 2-core machine they
    oversubscribe (10x slower); restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cli(args) -> int:
    from knowlm.cli.main import main

    try:
        main(args)
    except SystemExit as exc:
        return exc.code or 0
    return 0


def _check_shape(answer: dict, task: str, schema: list, bounds: Bounds) -> None:
    names = [s["event_type"] if isinstance(s, dict) else s for s in schema]
    assert list(answer) == names  # exactly the schema items, in order
    for item, value in zip(schema, answer.values()):
        assert isinstance(value, list) and len(value) <= bounds.max_items
        for v in value:
            if task == "ner":
                assert isinstance(v, str) and 1 <= len(v) <= bounds.max_chars
            elif task == "re":
                assert list(v) == ["subject", "object"] and all(isinstance(x, str) and 1 <= len(x) <= bounds.max_chars for x in v.values())
            else:
                assert list(v) == ["trigger", "arguments"] and list(v["arguments"]) == item["arguments"]
                assert all(isinstance(x, str) for x in v["arguments"].values())


CASES = [
    ("ner", ["人物", "地点", "组织机构"]),
    ("ner", ["person", "location"]),
    ("re", ["创办", "位于"]),
    ("ee", [{"event_type": "组织关系-裁员", "arguments": ["裁员方", "裁员人数"]}]),
]


def test_constrained_decoding_always_valid(tiny_model):
    from knowlm.ie.constrained import processor_factory
    from knowlm.ie.prompts import build_prompt
    from knowlm.ie.schema import make_schema

    model, tokenizer = tiny_model
    gen = Generator(model, tokenizer, "alpaca")
    bounds = Bounds(max_items=2, max_chars=4)
    prompts, rows = [], []
    for task, schema in CASES:
        for text in ("马云在杭州创办了阿里巴巴。", "Marie Curie was born in Warsaw."):
            prompts.append(gen.prompt(*build_prompt(task, text, schema, lang="zh")))
            rows.append(make_schema(task, schema))
    cache = GrammarCache()
    for sampling in (False, True):  # greedy and sampled decoding of a random model
        params = DecodingParams(max_new_tokens=160, temperature=1.0 if sampling else 0.0, seed=1)
        factory = processor_factory(gen, None, rows, bounds, cache)  # one grammar per row: schemas and tasks mix in a batch
        outs = gen.generate(prompts, params, batch_size=8, logits_processor=factory)
        for out, schema in zip(outs, rows):
            assert out.finish_reason == "stop", out
            _check_shape(json.loads(out.text), schema.task, schema.to_json(), bounds)
    assert len(cache) == 4  # one compiled grammar per distinct schema, reused across calls


def test_json_schema_shapes():
    s = json_schema("ee", [{"event_type": "地震", "arguments": ["震级"]}], Bounds(max_items=3, max_chars=10))
    assert s["required"] == ["地震"] and s["additionalProperties"] is False
    event = s["properties"]["地震"]["items"]
    assert event["properties"]["arguments"]["required"] == ["震级"] and s["properties"]["地震"]["maxItems"] == 3


class _Tok:
    """Counts characters as tokens (enough for chunking and budgets)."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(range(len(text)))}


class FakeGenerator:
    """Answers every prompt with the gold answer for capitalised words typed 'name'; counts calls."""

    template = "alpaca"

    def __init__(self):
        self.tokenizer = _Tok()
        self.model = None
        self.calls = []

    def prompt(self, instruction, input=""):
        return f"{instruction}\n{input}"

    def generate(self, prompts, params=None, batch_size=16, logits_processor=None, progress=False):
        self.calls.append(len(prompts))
        outs = []
        for p in prompts:
            obj = json.loads(p.split("\n")[0])
            text = obj["input"]
            record = {"text": text, "entities": [{"text": w, "type": "name"} for w in re.findall(r"\b[A-Z][a-z]+\b", text)]}
            answer = gold_output("ner", record, obj["schema"])
            if "Broken" in text:
                answer = "I cannot answer"
            outs.append(Generation(answer + " trailing words", 5, "stop", 0))
        return outs


def test_chunking_merges_offsets():
    text = "Alice met Bob. " * 6 + "Then Carol came."
    chunks = chunk_text(text, 40, len)
    assert "".join(c for _, c in chunks) == text and all(len(c) <= 40 for _, c in chunks)
    assert all(text[o : o + len(c)] == c for o, c in chunks)
    assert "".join(sentences("一句。二句！Three. Four")) == "一句。二句！Three. Four"
    gen = FakeGenerator()
    stats = {}
    records = extract_texts(gen, [{"id": "a", "text": text}, "Broken Dave.", "Eve"], "ner", ["name", "other"], max_input_tokens=40, stats=stats)
    assert gen.calls == [stats["prompts"]]  # one batched call for all (chunk x schema batch) prompts
    a = records[0]
    assert a["chunks"] > 1 and a["parse_status"] == "ok" and "trailing_text" in a["parse_notes"]
    assert {e["text"] for e in a["entities"]} == {"Alice", "Bob", "Then", "Carol"}
    assert all(text[e["start"] : e["end"]] == e["text"] for e in a["entities"])
    assert records[1]["parse_status"] == "failed" and records[1]["parse_error"] == "no_json"
    assert records[2]["id"] == "2" and records[2]["entities"][0]["text"] == "Eve"
    with pytest.raises(Exception, match="json prompt style"):
        extract_texts(gen, ["x"], "ner", ["name"], style="knowlm", constrained=True)


@pytest.mark.slow
def test_cli_extract_and_eval(tiny_model_dir, tmp_path, capsys):
    texts = tmp_path / "texts.jsonl"
    gold = tmp_path / "gold.jsonl"
    rows = [
        {"id": "1", "text": "马云在杭州创办了阿里巴巴。", "relations": [{"head": "马云", "relation": "创办", "tail": "阿里巴巴"}]},
        {"id": "2", "text": "Marie Curie was born in Warsaw.", "relations": [{"head": "Marie Curie", "relation": "born in", "tail": "Warsaw"}]},
    ]
    texts.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}, ensure_ascii=False) + "\n" for r in rows) + "not json\n", encoding="utf-8")
    gold.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    pred = tmp_path / "pred.jsonl"
    for constrained in ("--free", "--constrained"):
        assert _cli(["extract", "-m", str(tiny_model_dir), "--task", "re", "--schema", '["创办", "born in", "位于"]', "-i", str(texts),
                     "-o", str(pred), "--max-new-tokens", "48", "--split-num", "2", constrained]) == 0
        records = [json.loads(line) for line in pred.read_text(encoding="utf-8").splitlines()]
        assert [r["id"] for r in records] == ["1", "2"] and all(r["parse_status"] in ("ok", "partial", "failed") for r in records)
    report, plot = tmp_path / "report.json", tmp_path / "f1.png"
    assert _cli(["eval", "--gold", str(gold), "--pred", str(pred), "--report", str(report), "--plot", str(plot)]) == 0
    result = json.loads(report.read_text(encoding="utf-8"))
    assert result["relation"]["n_gold"] == 2 and plot.read_bytes()[:4] == b"\x89PNG"
    # perfect predictions score 1.0 through the CLI as well
    assert _cli(["eval", "--gold", str(gold), "--pred", str(gold), "--report", str(report)]) == 0
    assert json.loads(report.read_text(encoding="utf-8"))["relation"]["f1"] == 1.0
    out = capsys.readouterr().out
    assert "Extracted" in out and "Scored" in out
    assert _cli(["extract", "-m", str(tiny_model_dir), "--task", "xx", "--schema", "a", "-i", str(texts), "-o", str(pred)]) == 2
    assert _cli(["eval", "--gold", str(tmp_path / "missing.jsonl"), "--pred", str(pred)]) == 2


def test_cli_convert(tmp_path, capsys):
    src = tmp_path / "duie.json"
    src.write_text(json.dumps({"text": "浙江大学位于杭州", "spo_list": [{"predicate": "位于", "subject": "浙江大学", "subject_type": "学校",
                                                              "object": {"@value": "杭州"}, "object_type": {"@value": "地点"}}]}, ensure_ascii=False) + "\n{bad\n", encoding="utf-8")
    records = tmp_path / "records.jsonl"
    assert _cli(["convert", "duie", str(src), str(records)]) == 0
    assert "invalid_json: 1" in capsys.readouterr().out
    sft = tmp_path / "sft.jsonl"
    assert _cli(["convert", "sft", str(records), str(sft), "--task", "re", "--style", "knowlm"]) == 0
    item = json.loads(sft.read_text(encoding="utf-8").splitlines()[0])
    assert item["input"] == "浙江大学位于杭州" and item["output"] == "(浙江大学,位于,杭州)"
    assert _cli(["convert", "nope", str(src), str(records)]) == 2


@pytest.mark.slow
def test_demo_stage(tiny_model_dir, tmp_path):
    from knowlm.ie import demo_stage

    summary = demo_stage(tmp_path, tiny_model_dir, n_texts=3, max_new_tokens=24, tag="before")
    assert summary["texts"] == 3 and 0.0 <= summary["f1"] <= 1.0
    assert json.loads(open(summary["report"], encoding="utf-8").read())["relation"]["n_gold"] >= 3
