"""The extraction pipeline: constrained decoding with the tiny model; chunking, merging, stop strings
and parse status with a scripted generator; `knowlm extract` + `knowlm eval` end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scripted_generator import ScriptedGenerator, capitalised_names

from knowlm.errors import KnowlmError
from knowlm.ie import extract_texts
from knowlm.ie.constrained import Bounds, GrammarCache, json_schema
from knowlm.ie.extract import chunk_text
from knowlm.infer import DecodingParams, Generator, TextGenerator


@pytest.fixture(autouse=True)
def _one_thread():
    """A tiny model gains nothing from intra-op threads, and on a busy 2-core machine they
    oversubscribe (10x slower); restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _check_shape(answer: dict, task: str, schema: list, bounds: Bounds) -> None:
    names = [s["event_type"] if isinstance(s, dict) else s for s in schema]
    # schema items only, in order, none twice, the first always (the answer may close after any key)
    assert list(answer)[:1] == names[:1] and list(answer) == [n for n in names if n in answer]
    for item, value in ((schema[names.index(k)], v) for k, v in answer.items()):
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


def test_constrained_answer_may_close_after_any_key_but_never_repeats_one(tiny_model):
    """A finished model is not forced to write on (it invented items for the forced keys); a key written
    twice, which free decoding sometimes does, cannot happen."""
    xgr = pytest.importorskip("xgrammar")
    model, tokenizer = tiny_model
    grammar = GrammarCache().grammar(tokenizer, model.config.vocab_size, json_schema("re", ["spouse", "employer", "founded by"]))

    def accepts(text: str) -> bool:
        matcher = xgr.GrammarMatcher(grammar)
        return matcher.accept_string(text) and matcher.accept_token(tokenizer.eos_token_id) and matcher.is_terminated()

    assert accepts('{"spouse": []}') and accepts('{"spouse": [], "founded by": []}')
    assert accepts(' {"spouse": [{"subject": "A", "object": "B"}], "employer": [], "founded by": []}')
    assert not accepts("{}") and not accepts('{"employer": []}')  # the first key always
    assert not accepts('{"spouse": [], "spouse": []}') and not accepts('{"employer": [], "spouse": []}')
    assert not accepts('{"spouse": [], "child": []}')



def test_grammar_processor_lets_back_a_valid_token_the_mask_dropped():
    """xgrammar's mask drops ``tts`` after ``x`` here though its matcher accepts it (a rejected ``ts``
    sorts right before it); the processor asks the matcher and lets it back in, and nothing the
    grammar forbids gets through."""
    torch = pytest.importorskip("torch")
    xgr = pytest.importorskip("xgrammar")
    from knowlm.ie.constrained import make_processor

    vocab = ["</s>", "x", "y", "t", "s", "ts", "tts"]
    info = xgr.TokenizerInfo(vocab, vocab_type=xgr.VocabType.RAW, stop_token_ids=[0])
    grammar = xgr.GrammarCompiler(info).compile_grammar(xgr.Grammar.from_ebnf('root ::= "x" "tts" "y"'))
    processor = make_processor([grammar])
    first = processor(torch.tensor([[0]]), torch.zeros(1, len(vocab)))
    assert torch.isfinite(first[0]).tolist() == [False, True, False, False, False, False, False]
    likes = torch.tensor([[0.0, 0.0, 9.0, 1.0, 0.0, 5.0, 3.0]])  # y and ts (invalid) outrank tts
    scores = processor(torch.tensor([[0, 1]]), likes.clone())
    assert torch.isfinite(scores[0]).tolist() == [False, False, False, True, False, False, True]
    assert int(scores.argmax()) == vocab.index("tts") and float(scores[0, 6]) == 3.0

def _names_or_refuse(request):
    return "I cannot answer" if "Broken" in request["input"] else capitalised_names(request) + " trailing words"


def test_chunks_cut_at_real_sentence_ends():
    text = "Alice met Bob. " * 6 + "Then Carol came."
    chunks = chunk_text(text, 40, len)
    assert chunks == [(0, "Alice met Bob. Alice met Bob."), (30, "Alice met Bob. Alice met Bob."),
                      (60, "Alice met Bob. Alice met Bob."), (90, "Then Carol came.")]
    assert all(text[start:start + len(chunk)] == chunk for start, chunk in chunks)
    # no whitespace around a chunk (a trailing space before the prompt's closing quote derails a tuned model)
    assert chunk_text("  Alice met Bob.\n\nThen Carol came.  ", 18, len) == [(2, "Alice met Bob."), (18, "Then Carol came.")]
    assert chunk_text(" Alice met Bob.\n", 100, len) == [(1, "Alice met Bob.")] and chunk_text(" \n", 100, len) == []
    # abbreviations and initials do not end a sentence, so no chunk ends inside this one
    assert chunk_text("Alice went home. Dr. Smith met J. K. Rowling.", 30, len) == [(0, "Alice went home."), (17, "Dr. Smith met J. K. Rowling.")]
    assert chunk_text("浙江大学位于杭州。它创建于1897年。", 10, len, lang="zh") == [(0, "浙江大学位于杭州。"), (9, "它创建于1897年。")]
    assert chunk_text("一二三四五六七八九十一二", 5, len) == [(0, "一二三四"), (4, "五六七八"), (8, "九十一二")]  # no sentence end: cut by length


def test_extraction_merges_chunks_and_reports_parse_status():
    gen = ScriptedGenerator(_names_or_refuse)
    assert isinstance(gen, TextGenerator)
    text = "Alice met Bob. " * 6 + "Then Carol came."
    stats = {}
    records = extract_texts(gen, [{"id": "a", "text": text}, "Broken Dave.", "Eve"], "ner", ["name", "other"], max_input_tokens=40, stats=stats)
    (prompts, params, batch_size), = gen.calls  # one batched call for every (chunk x schema batch) prompt
    assert len(prompts) == stats["prompts"] == 6 and batch_size == 16
    assert params.max_new_tokens == 512 and params.temperature == 0.0  # the ie preset
    span = lambda t, s: {"text": t, "type": "name", "start": s, "end": s + len(t)}  # noqa: E731
    assert records == [
        {"id": "a", "text": text, "lang": "en", "entities": [span("Alice", 0), span("Bob", 10), span("Then", 90), span("Carol", 95)],
         "relations": [], "events": [], "parse_status": "ok", "parse_notes": ["trailing_text"], "chunks": 4},
        {"id": "1", "text": "Broken Dave.", "lang": "en", "entities": [], "relations": [], "events": [],
         "parse_status": "failed", "parse_errors": ["no_json"], "parse_error": "no_json"},
        {"id": "2", "text": "Eve", "lang": "en", "entities": [span("Eve", 0)], "relations": [], "events": [],
         "parse_status": "ok", "parse_notes": ["trailing_text"]},
    ]
    assert {k: stats[k] for k in ("texts", "chunked_texts", "hit_length", "parse_failures", "failed_records")} == {
        "texts": 3, "chunked_texts": 1, "hit_length": 0, "parse_failures": 1, "failed_records": 1}


def test_partial_and_truncated_answers():
    def script(request):
        if request["schema"] == ["person"]:
            return json.dumps({"person": ["Tim Cook"]})
        return '{"company": ["Apple", "Bea', "length"  # cut off mid-string: the complete spans are kept, and noted
    gen = ScriptedGenerator(script)
    record, = extract_texts(gen, ["Tim Cook leads Apple."], "ner", ["person", "company"], split_num=1)
    assert record["parse_status"] == "ok" and record["parse_notes"] == ["hit_max_new_tokens", "repaired_truncated"]
    assert record["entities"] == [{"text": "Tim Cook", "type": "person", "start": 0, "end": 8}, {"text": "Apple", "type": "company", "start": 15, "end": 20}]

    gen = ScriptedGenerator(lambda r: json.dumps({"person": ["Tim Cook"]}) if r["schema"] == ["person"] else ("I think", "length"))
    record, = extract_texts(gen, ["Tim Cook leads Apple."], "ner", ["person", "company"], split_num=1)
    assert record["parse_status"] == "partial" and record["parse_errors"] == ["truncated"] and "parse_error" not in record
    assert [e["text"] for e in record["entities"]] == ["Tim Cook"]


def test_stop_strings_and_context_come_from_the_generator():
    gen = ScriptedGenerator(capitalised_names, stop=("<|next|>", "</turn>"))
    extract_texts(gen, ["Eve"], "ner", ["name"], params=DecodingParams(max_new_tokens=8, stop=["</turn>", "\n\n"]))
    extract_texts(gen, ["Eve"], "ner", ["name"])
    assert gen.calls[0][1].stop == ["</turn>", "\n\n", "<|next|>"] and gen.calls[0][1].max_new_tokens == 8
    assert gen.calls[1][1].stop == ["<|next|>", "</turn>"]
    # the text budget is the generator's context minus the prompt and the answer: a long text is chunked
    prompt_chars = len(gen.prompt(*__import__("knowlm.ie.prompts", fromlist=["build_prompt"]).build_prompt("ner", "", ["name"], lang="en")))
    small = ScriptedGenerator(capitalised_names, max_context=prompt_chars + 8 + 40)
    record, = extract_texts(small, ["Alice met Bob. " * 6], "ner", ["name"], lang="en", params=DecodingParams(max_new_tokens=8))
    assert record["chunks"] == 3 and all(len(p) - prompt_chars <= 40 for p in small.calls[0][0])
    tiny = ScriptedGenerator(capitalised_names, max_context=prompt_chars + 8 + 15)
    with pytest.raises(KnowlmError, match=rf"^the model's context \({prompt_chars + 23} tokens\) leaves no room for text after the prompt"):
        extract_texts(tiny, ["x"], "ner", ["name"], lang="en", params=DecodingParams(max_new_tokens=8))
    with pytest.raises(KnowlmError, match="^--constrained works with the json prompt style only$"):
        extract_texts(gen, ["x"], "ner", ["name"], style="knowlm", constrained=True)


def test_ie_imports_and_extracts_with_torch_blocked():
    """The layering rule: knowlm.ie runs on a machine without torch, given any TextGenerator."""
    code = """
import json, sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "xgrammar"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, NoTorch())
import knowlm.ie, knowlm.ie.datasets, knowlm.ie.constrained
from scripted_generator import ScriptedGenerator, capitalised_names
record, = knowlm.ie.extract_texts(ScriptedGenerator(capitalised_names), ["Dr. Smith met Eve."], "ner", ["name"])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers") or m.startswith(("knowlm.infer", "knowlm.models")))
print(json.dumps([record["parse_status"], [e["text"] for e in record["entities"]], loaded]))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["ok", ["Dr", "Smith", "Eve"], []]


@pytest.mark.slow
def test_cli_extract_and_eval(cli, tiny_model_dir, tmp_path, monkeypatch):
    texts = tmp_path / "texts.jsonl"
    gold = tmp_path / "gold.jsonl"
    rows = [
        {"id": "1", "text": "马云在杭州创办了阿里巴巴。", "relations": [{"head": "马云", "relation": "创办", "tail": "阿里巴巴"}]},
        {"id": "2", "text": "Marie Curie was born in Warsaw.", "relations": [{"head": "Marie Curie", "relation": "born in", "tail": "Warsaw"}]},
    ]
    texts.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}, ensure_ascii=False) + "\n" for r in rows) + "not json\n", encoding="utf-8")
    gold.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    pred = tmp_path / "pred.jsonl"
    schema = '["创办", "born in", "位于"]'

    # The real tiny model through the real loader: the wiring works and every answer is accounted for.
    for constrained in ("--free", "--constrained"):
        result = cli("extract", "-m", tiny_model_dir, "--task", "re", "--schema", schema, "-i", texts, "-o", pred,
                     "--max-new-tokens", "48", "--split-num", "2", constrained, "--overwrite")
        assert result.exit_code == 0, result.stderr
        records = [json.loads(line) for line in pred.read_text(encoding="utf-8").splitlines()]
        assert [r["id"] for r in records] == ["1", "2"] and [r["text"] for r in records] == [r["text"] for r in rows]
        for record in records:  # two prompts per text (schema split 2 + 1): the status counts their failures
            failed = len(record.get("parse_errors", []))
            assert record["parse_status"] == ("ok", "partial", "failed")[failed]
        assert "template 'alpaca'" in result.stdout and "1 input lines skipped" in result.stdout

    # A scripted generator in place of the model: exact records and exact scores.
    def script(request):
        answers = {"创办": [{"subject": "马云", "object": "阿里巴巴"}], "born in": [{"subject": "Marie Curie", "object": "Paris"}]}
        if "阿里巴巴" in request["input"]:
            return json.dumps({k: answers["创办"] if k == "创办" else [] for k in request["schema"]}, ensure_ascii=False)
        return json.dumps({k: answers["born in"] if k == "born in" else [] for k in request["schema"]})
    calls = []

    def scripted_loader(model, adapter=None, template=None, **options):
        calls.append((model, adapter, template, options))
        return ScriptedGenerator(script, template="alpaca")

    monkeypatch.setattr("knowlm.infer.load_generator", scripted_loader)
    result = cli("extract", "-m", tiny_model_dir, "--task", "re", "--schema", schema, "-i", texts, "-o", pred, "--template", "chatml", "--keep-hallucinated", "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert calls == [(str(tiny_model_dir), None, "chatml", {"dtype": "auto", "device": "auto", "backend": "hf", "compile": False, "ie_wording": None})]
    records = [json.loads(line) for line in pred.read_text(encoding="utf-8").splitlines()]
    assert [(r["parse_status"], r["relations"]) for r in records] == [
        ("ok", [{"head": "马云", "relation": "创办", "tail": "阿里巴巴"}]),
        ("ok", [{"head": "Marie Curie", "relation": "born in", "tail": "Paris"}]),
    ]
    assert result.stdout.startswith("Extracted 2 relations from 2 texts (2 prompts, ")

    report, plot = tmp_path / "report.json", tmp_path / "f1.png"
    result = cli("eval", "--gold", gold, "--pred", pred, "--report", report, "--plot", plot)
    assert result.exit_code == 0 and "Scored" in result.stdout
    relation = json.loads(report.read_text(encoding="utf-8"))["relation"]
    assert {k: relation[k] for k in ("tp", "n_pred", "n_gold", "precision", "recall", "f1")} == {
        "tp": 1, "n_pred": 2, "n_gold": 2, "precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert cli("eval", "--gold", gold, "--pred", gold, "--report", report).exit_code == 2  # the report exists
    assert cli("eval", "--gold", gold, "--pred", gold, "--report", report, "--overwrite").exit_code == 0
    assert json.loads(report.read_text(encoding="utf-8"))["relation"]["f1"] == 1.0

    bad = cli("extract", "-m", tiny_model_dir, "--task", "xx", "--schema", "a", "-i", texts, "-o", pred)
    assert (bad.exit_code, bad.stderr.count("\n")) == (2, 1) and bad.stderr.startswith("error: ")
    missing = cli("eval", "--gold", tmp_path / "missing.jsonl", "--pred", pred)
    assert missing.exit_code == 2 and "missing.jsonl" in missing.stderr


def test_cli_convert(cli, tmp_path):
    src = tmp_path / "duie.json"
    src.write_text(json.dumps({"text": "浙江大学位于杭州", "spo_list": [{"predicate": "位于", "subject": "浙江大学", "subject_type": "学校",
                                                              "object": {"@value": "杭州"}, "object_type": {"@value": "地点"}}]}, ensure_ascii=False) + "\n{bad\n", encoding="utf-8")
    records = tmp_path / "records.jsonl"
    result = cli("convert", "duie", src, records)
    assert result.exit_code == 0 and "invalid_json: 1" in result.stdout
    sft = tmp_path / "sft.jsonl"
    assert cli("convert", "sft", records, sft, "--task", "re", "--style", "knowlm").exit_code == 0
    item = json.loads(sft.read_text(encoding="utf-8").splitlines()[0])
    assert item["input"] == "浙江大学位于杭州" and item["output"] == "(浙江大学,位于,杭州)"
    bad = cli("convert", "nope", src, records)
    assert bad.exit_code == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1


def test_progress_counts_texts_not_batches():
    """The extraction bar moves when a text's last prompt is answered: here 2 texts x 2 schema batches."""
    from scripted_generator import ScriptedGenerator

    from knowlm.ie.extract import _TextBar, extract_texts

    seen: list[tuple[int, int]] = []
    original = _TextBar.__call__

    def spy(self, indices, generations):
        original(self, indices, generations)
        seen.append((self.done, self.tokens))

    gen = ScriptedGenerator(lambda request: "{}", template="alpaca")
    _TextBar.__call__ = spy
    try:
        extract_texts(gen, ["马云创办了阿里巴巴。", "Marie Curie was born in Warsaw."], "re", ["创办", "born in", "位于"],
                      split_num=2, progress=True, batch_size=1)
    finally:
        _TextBar.__call__ = original
    assert [n for n, _ in seen] == [0, 1, 1, 2]  # texts done after each answered prompt
    assert seen[-1][1] == 4 * len("{}")  # tokens of every answer


def test_grounding_is_opt_in(monkeypatch):
    """Constrained decoding grounds span values in the text only when asked (``ground=True``)."""
    import knowlm.ie.constrained as constrained

    grounded_rows = []

    def factory(generator, task, row_schemas, bounds, row_texts=None):
        grounded_rows.append((task, row_texts))
        return None

    monkeypatch.setattr(constrained, "processor_factory", factory)
    gen = ScriptedGenerator(lambda request: json.dumps({k: [] for k in request["schema"]}))
    text = "Marie Curie was born in Warsaw."
    extract_texts(gen, [text], "ner", ["person"], lang="en", constrained=True)
    extract_texts(gen, [text], "re", ["place of birth"], lang="en", constrained=True)
    extract_texts(gen, [text], "re", ["place of birth"], lang="en", constrained=True, ground=True)
    assert grounded_rows == [("ner", None), ("re", None), ("re", [text])]
