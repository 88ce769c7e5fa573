"""Selectors on small hand-made data, the YAML pipeline, dry runs and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from knowlm.errors import KnowlmError
from knowlm.instruct import build_steps, run_steps, select
from knowlm.instruct.selectors import (DedupSelector, JudgeSelector, LanguageSelector, LengthSelector, MTLDSelector,
                                       PerplexitySelector, RougeSelector, SelectContext, parse_score)


def rec(instruction: str, output: str = "An answer.", input: str = "") -> dict:
    return {"instruction": instruction, "input": input, "output": output}


def decide(selector, records, context=None):
    decisions = selector.decide(records, context or SelectContext())
    return [d.reason for d in decisions], [d.score for d in decisions]


def test_length():
    records = [rec("Hi"), rec("Name a city in China."), rec("Name a river.", ""), rec("Write one word.", "one two three four"),
               rec("浙江大学在哪里？", "杭州")]
    reasons, scores = decide(LengthSelector(min_instruction=3, max_output=3), records)
    assert reasons == ["instruction_too_short", None, "empty_output", "output_too_long", None]
    assert scores[4] == {"instruction": 7, "input": 0, "output": 2, "total": 9}  # Chinese counts characters


def test_dedup_exact_and_near():
    long = ("Hangzhou is the capital of Zhejiang province and one of the most prosperous cities in China, "
            "famous for the West Lake, tea plantations, silk, and a long history as an imperial capital.")
    records = [
        rec("Describe Hangzhou.", long),
        rec("describe   HANGZHOU.", long.upper()),  # exact after case folding and whitespace collapsing
        rec("Describe Hangzhou.", long.replace("tea plantations", "tea gardens")),  # one edit: near duplicate
        rec("Describe Shanghai.", "Shanghai is a global financial centre on the Yangtze delta with a busy port."),
    ]
    reasons, scores = decide(DedupSelector(), records)
    assert reasons == [None, "exact_duplicate", "near_duplicate", None]
    assert scores[1]["duplicate_of"] == 0 and scores[2]["duplicate_of"] == 0 and scores[2]["similarity"] >= 0.8
    reasons, _ = decide(DedupSelector(near=False), records)
    assert reasons == [None, "exact_duplicate", None, None]


def test_rouge_diversity_by_hand():
    records = [rec("the cat sat on the mat"), rec("the cat lay on the mat"), rec("a completely different request here"),
               rec("浙江大学位于杭州"), rec("浙江大学位于杭州市")]
    reasons, scores = decide(RougeSelector(field="instruction"), records)
    assert reasons == [None, "similar_to_kept", None, None, "similar_to_kept"]
    assert scores[1] == {"rouge_l": round(10 / 12, 4), "similar_to": 0}
    assert scores[4] == {"rouge_l": round(16 / 17, 4), "similar_to": 3}
    reasons, _ = decide(RougeSelector(field="instruction", threshold=0.9), records)
    assert reasons == [None, None, None, None, "similar_to_kept"]


def test_mtld_selector():
    looping = " ".join(["the model says the model says"] * 6)
    varied = "Hangzhou lies on the Qiantang River; its West Lake, tea hills and old temples draw millions of visitors each year."
    reasons, scores = decide(MTLDSelector(), [rec("Talk.", looping), rec("Talk.", varied), rec("Talk.", "Yes.")])
    assert reasons == ["low_lexical_diversity", None, None]
    # "the model says the model" reaches TTR 3/5 = 0.6 <= 0.72: a factor every 5 tokens, 7 in 36 tokens, the
    # last token leaves TTR 1 (no partial factor), both directions alike -> 36 / 7
    assert scores[0] == pytest.approx(36 / 7, abs=1e-4) and scores[1] > 10.0 and scores[2] is None  # "Yes." is too short to judge


def test_language_selector():
    records = [rec("介绍一下杭州。", "杭州是浙江省的省会。"), rec("Describe Hangzhou.", "It is a city."),
               rec("Расскажи о Москве.", "Москва — столица."), rec("Describe Hangzhou.", "杭州是浙江省的省会城市。")]
    reasons, scores = decide(LanguageSelector(), records)
    assert reasons == [None, None, "language_other", None] and scores[:3] == ["zh", "en", "other"]
    reasons, _ = decide(LanguageSelector(langs=["zh"], consistent=True), records)
    assert reasons == [None, "language_en", "language_other", "language_mismatch"]


def test_parse_judge_scores():
    cases = {"Score: 4": 4, "**Rating**: 5/5": 5, "I would give it 3 out of 5.": 3, "评分：2分": 2, "4": 4, "得分为 5": 5,
             "Score: 4.5": 4.5, "Score: 9": None, "It is good": None, "1 2 3": None, "": None, None: None, "3分": 3}
    for text, expected in cases.items():
        assert parse_score(text) == expected, text


def test_judge_selector_with_a_stub_model():
    answers = iter(["Score: 5", "score: 2", "no idea", None])

    class Stub:
        name, stats = "stub", None

        def generate(self, prompts, params):
            assert "Instruction:" in prompts[0] and params.temperature == 0.0
            return [next(answers) for _ in prompts]

    records = [rec(f"Question {i}?") for i in range(4)]
    decisions = JudgeSelector().decide(records, SelectContext(llm=Stub()))
    assert [(d.keep, d.score, d.reason, d.note) for d in decisions] == [
        (True, 5.0, None, None), (False, 2.0, "low_judge_score", None), (True, None, None, "judge_unparsed"),
        (True, None, None, "judge_request_failed")]


def test_perplexity_matches_the_model_loss(tiny_model):
    import torch

    from knowlm.infer import Generator
    from knowlm.instruct.selectors.model_based import answer_ids, answer_nll

    model, tokenizer = tiny_model
    records = [rec("Where is Zhejiang University?", "In Hangzhou."), rec("Translate.", "浙江大学位于杭州。", input="Zhejiang University is in Hangzhou."),
               rec("Name three rivers in China, please, with a short description of each.", "Yangtze, Yellow River and Pearl River.")]
    got = answer_nll(model, tokenizer, "alpaca", records, batch_size=2)
    for record, value in zip(records, got):  # one at a time, no padding, the model's own loss
        ids, prompt_len = answer_ids(tokenizer, "alpaca", record, 1024)
        labels = torch.tensor([[-100] * prompt_len + ids[prompt_len:]])
        with torch.inference_mode():
            expected = model(input_ids=torch.tensor([ids]), labels=labels).loss.item()
        assert value == pytest.approx(expected, rel=1e-4)
    first = math.exp(got[0])
    decisions = PerplexitySelector(max_perplexity=first * 1.0001).decide(records, SelectContext(generator=Generator(*tiny_model)))
    assert decisions[0].keep and decisions[0].score == pytest.approx(first, rel=1e-3)
    assert [d.reason for d in decisions if not d.keep] == ["perplexity_too_high"] * sum(math.exp(v) > first * 1.0001 for v in got)


def test_pipeline_composes_in_order_and_dry_run_drops_nothing():
    records = [rec("Name a city in China.", "Hangzhou."), rec("name a city in china.", "hangzhou."), rec("Hi", "Hello."),
               rec("Name a city in China!", "Beijing.")]
    steps = build_steps([{"selector": "length", "min_instruction": 3}, "dedup", {"selector": "rouge", "field": "instruction"}])
    kept, dropped, report = run_steps(records, steps)
    assert [r["output"] for r in kept] == ["Hangzhou."]
    assert [(s["step"], s["input"], s["dropped"], s["reasons"]) for s in report] == [
        ("length", 4, 1, {"instruction_too_short": 1}), ("dedup", 3, 1, {"exact_duplicate": 1}), ("rouge", 2, 1, {"similar_to_kept": 1})]
    assert [d["dropped"] for d in dropped] == [{"step": "dedup", "reason": "exact_duplicate"}, {"step": "length", "reason": "instruction_too_short"},
                                               {"step": "rouge", "reason": "similar_to_kept"}]
    assert "scores" not in kept[0]
    # dry run: every record comes back, scored; the first step that would drop it is named
    everything, _, dry_report = run_steps(records, steps, dry_run=True)
    assert len(everything) == 4 and all(set(r["scores"]) == {"length", "dedup", "rouge"} for r in everything)
    assert everything[3]["dropped"] == {"step": "rouge", "reason": "similar_to_kept"} and everything[3]["scores"]["rouge"]["similar_to"] == 0
    assert "dropped" not in everything[0]
    assert [s["input"] for s in dry_report] == [4, 4, 4]
    # the same selector twice gets two score keys
    assert [s.label for s in build_steps(["length", "length"])] == ["length", "length#2"]


def test_pipeline_errors_are_one_line():
    with pytest.raises(KnowlmError, match="unknown selector 'nope'"):
        build_steps([{"selector": "nope"}])
    with pytest.raises(KnowlmError, match="unknown parameter"):
        build_steps([{"selector": "rouge", "treshold": 0.5}])
    with pytest.raises(KnowlmError, match="non-empty list"):
        build_steps({"selector": "rouge"})
    with pytest.raises(KnowlmError, match="threshold"):
        build_steps([{"selector": "dedup", "threshold": 1.5}])


def cli(*args: str) -> int:
    from knowlm.cli.main import main

    try:
        main(list(args))
    except SystemExit as exc:
        return exc.code or 0
    return 0


def test_select_file_with_yaml_and_cli(tmp_path, capsys):

    rows = [rec("Name a city in China.", "Hangzhou."), rec("Name a city in China.", "Hangzhou."), rec("Расскажи о Москве.", "Москва.")]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n{broken\n" + json.dumps({"output": "no instruction"}) + "\n",
                      encoding="utf-8")
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("- selector: dedup\n- selector: language\n  langs: [en]\n", encoding="utf-8")
    summary = select(source, tmp_path / "out.jsonl", pipeline, rejected=tmp_path / "rejected.jsonl")
    assert summary["read"] == 3 and summary["skipped_lines"] == {"no_instruction": 1, "invalid_json": 1}
    assert summary["written"] == 1 and summary["dropped"] == 2
    assert len((tmp_path / "rejected.jsonl").read_text(encoding="utf-8").splitlines()) == 2

    assert cli("instruct", "select", "-i", str(source), "-o", str(tmp_path / "cli.jsonl"), "-p", str(pipeline), "--dry-run",
               "--report", str(tmp_path / "report.json")) == 0
    out = capsys.readouterr().out
    assert "would drop 2" in out
    assert len((tmp_path / "cli.jsonl").read_text(encoding="utf-8").splitlines()) == 3
    assert json.loads((tmp_path / "report.json").read_text())["steps"][0]["reasons"] == {"exact_duplicate": 1}

    bad = tmp_path / "bad.yaml"
    bad.write_text("- selector: nope\n", encoding="utf-8")
    assert cli("instruct", "select", "-i", str(source), "-o", str(tmp_path / "x.jsonl"), "-p", str(bad)) == 2
    assert "unknown selector" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_generate_cli_kg2instruct_and_bad_method(tmp_path, capsys):
    from knowlm import resources

    corpus = tmp_path / "corpus.jsonl"  # a few documents keep it quick
    corpus.write_text("".join(resources.corpus_path().read_text(encoding="utf-8").splitlines(keepends=True)[:3]), encoding="utf-8")
    out = tmp_path / "kg.jsonl"
    assert cli("instruct", "generate", "--method", "kg2instruct", "--seeds", str(corpus), "--kg", str(resources.kg_path()),
               "--output", str(out)) == 0
    assert "KG2Instruction wrote" in capsys.readouterr().out and out.stat().st_size > 0
    assert cli("instruct", "generate", "--method", "evol", "--seeds", str(out), "--output", str(tmp_path / "y.jsonl")) == 2
    assert "unknown --method" in capsys.readouterr().err
    assert cli("instruct", "generate", "--method", "self-instruct", "--seeds", str(out), "--output", str(tmp_path / "y.jsonl")) == 2
    assert "exactly one of --api-base" in capsys.readouterr().err


def test_demo_stage(tmp_path):
    from knowlm.instruct import demo_stage

    summary = demo_stage(tmp_path)
    assert summary["read"] == summary["kept"] + summary["dropped"] > 0
    assert list(summary["per_step"]) == ["length", "dedup", "rouge", "mtld", "language"]
    assert Path(summary["output"]).is_file()
