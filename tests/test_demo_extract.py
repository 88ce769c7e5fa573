"""The demo's held-out extraction: gold entities derived from relations, NER and RE per language
through a generator, exact scores, summary keys, chart, examples; the work-directory guard."""

import json

import pytest
from scripted_generator import ScriptedGenerator

from knowlm.demo_extract import evaluate_stage, examples, extraction_summary, held_out_gold, plot_extraction, scores_table, scores_text
from knowlm.errors import KnowlmError

GOLD = [
    {"id": "en-1", "lang": "en", "text": "Marie Curie was born in Warsaw.",
     "relations": [{"head": "Marie Curie", "relation": "place of birth", "tail": "Warsaw"}],
     "entities": [{"text": "Marie Curie", "type": "person"}, {"text": "Warsaw", "type": "location"}]},
    {"id": "zh-1", "lang": "zh", "text": "鲁迅出生于绍兴。",
     "relations": [{"head": "鲁迅", "relation": "出生地", "tail": "绍兴"}],
     "entities": [{"text": "鲁迅", "type": "人物"}, {"text": "绍兴", "type": "地点"}]},
]
SCHEMA = {"ner": {"en": ["location", "person"], "zh": ["人物", "地点"]}, "re": {"en": ["place of birth", "spouse"], "zh": ["出生地"]}}


def script(request):
    answer = {k: [] for k in request["schema"]}
    if request["input"].startswith("Marie"):
        if "person" in answer:
            answer.update(person=["Marie Curie"], location=["Curie"])  # one right, one wrong
        else:
            answer["place of birth"] = [{"subject": "Marie Curie", "object": "Warsaw"}]
    elif "人物" in answer:
        return "不是答案"  # a parse failure: NER of the Chinese document predicts nothing
    else:
        answer["出生地"] = [{"subject": "鲁迅", "object": "绍兴"}]
    return json.dumps(answer, ensure_ascii=False)


@pytest.fixture
def scripted(monkeypatch):
    loads = []

    def loader(model, adapter=None, template=None, **options):
        loads.append((model, options))
        return ScriptedGenerator(script)

    monkeypatch.setattr("knowlm.infer.load_generator", loader)
    return loads


def test_evaluate_stage_scores_each_measure_and_language(tmp_path, scripted):
    stage = evaluate_stage(tmp_path, tmp_path / "model", "after", [dict(g) for g in GOLD], SCHEMA)
    assert scripted == [(str(tmp_path / "model"), {"device": "cpu", "ie_wording": None})]
    s = stage["scores"]
    assert s["en"]["relation"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert s["en"]["entity"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert s["zh"]["entity"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0} and s["zh"]["relation"]["f1"] == 1.0
    assert s["all"]["entity"] == {"precision": 0.5, "recall": 0.25, "f1": round(1 / 3, 4)}
    assert (stage["documents"], stage["parse_failures"], stage["prompts"], stage["max_input_tokens"]) == (2, 1, 4, 96)
    preds = [json.loads(line) for line in (tmp_path / "after" / "pred.jsonl").read_text(encoding="utf-8").splitlines()]
    assert preds[1]["relations"] == [{"head": "鲁迅", "relation": "出生地", "tail": "绍兴"}] and preds[1]["failed_tasks"] == ["ner"]

    stages = {"before": {**stage, "scores": {p: {m: {"precision": 0.0, "recall": 0.0, "f1": 0.0} for m in ("entity", "relation")}
                                            for p in ("all", "en", "zh")}}, "after": stage, "after_constrained": stage}
    summary = extraction_summary(stages)
    assert summary["held_out_documents"] == 2 and set(summary) == {"held_out_documents", "before", "after", "after_constrained"}
    for name in ("before", "after", "after_constrained"):
        assert set(summary[name]["entity"]) == set(summary[name]["relation"]) == {"precision", "recall", "f1"}
    assert summary["after"]["by_language"]["zh"]["relation"]["f1"] == 1.0
    png = plot_extraction(stages, tmp_path / "chart.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| after | en | 0.500 | 0.500 | 0.500 | 1.000 | 1.000 | 1.000 |" in scores_table(stages)
    text = scores_text(stages).splitlines()  # what `knowlm demo` prints
    assert text[0] == "held-out documents: 2 (strict match)" and len(text) == 1 + 3 * 4
    assert text[6] == "after              en   entity P 0.500 R 0.500 F1 0.500  relation P 1.000 R 1.000 F1 1.000"
    assert text[8].startswith("after              parse failures 1 of 4 prompts, ")
    picked = examples(GOLD, preds)
    assert [e["id"] for e in picked] == ["en-1", "zh-1"]
    assert picked[0]["predicted"] == [{"triple": ["Marie Curie", "place of birth", "Warsaw"], "correct": True}] and picked[0]["missed"] == []


def test_bundled_gold_entities_are_the_typed_heads_and_tails():
    gold = held_out_gold()
    assert len(gold) == 63 and [g["id"] for g in gold] == sorted(g["id"] for g in gold)
    first = gold[0]
    assert first["id"] == "en-001"
    assert {"text": "Marie Curie", "type": "person"} in first["entities"] and {"text": "Warsaw", "type": "location"} in first["entities"]
    names = {r[k] for r in first["relations"] for k in ("head", "tail")}
    assert {e["text"] for e in first["entities"]} == names
    assert sum(len(g["entities"]) for g in gold) == 595


def test_workdir_guard_refuses_what_the_demo_did_not_make(tmp_path, cli):
    from knowlm.demo import MARKER, claim_workdir

    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me", encoding="utf-8")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("keep me too", encoding="utf-8")
    for target in (a_file, busy):
        result = cli("demo", "--workdir", target)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert a_file.read_text(encoding="utf-8") == "keep me" and [p.name for p in busy.iterdir()] == ["thesis.tex"]
    with pytest.raises(KnowlmError, match="did not create"):
        claim_workdir(busy)
    fresh = claim_workdir(tmp_path / "fresh")
    (fresh / "report.md").write_text("old", encoding="utf-8")
    assert claim_workdir(fresh) == fresh and (fresh / MARKER).is_file()  # the demo's own directory is reused
    empty = tmp_path / "empty"
    empty.mkdir()
    assert claim_workdir(empty) == empty
