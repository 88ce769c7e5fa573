"""Generators: self-instruct against `knowlm serve` on loopback, back-translation with a local model,
resumption, endpoint retries with back-off, and KG2Instruction as a generator."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from knowlm.errors import KnowlmError
from knowlm.instruct import (BacktranslationConfig, EndpointLLM, LLMParams, LocalLLM, SelfInstructConfig, backtranslate,
                             kg_instructions, self_instruct)
from knowlm.instruct.llm import CallStats
from knowlm.instruct.self_instruct import instruction_problem, parse_instance, parse_instructions

VOCAB = [f"word{i}" for i in range(1000)]
SEEDS = [
    {"instruction": "Name three famous universities in China.", "input": "", "output": "Peking University, Tsinghua University, Zhejiang University."},
    {"instruction": "Translate the sentence into English.", "input": "浙江大学位于杭州。", "output": "Zhejiang University is in Hangzhou."},
    {"instruction": "Extract the person names from the text.", "input": "Marie Curie met Pierre Curie in Paris.", "output": "Marie Curie, Pierre Curie"},
    {"instruction": "Summarize the paragraph in one sentence.", "input": "Hangzhou is the capital of Zhejiang. It is famous for West Lake.", "output": "Hangzhou is known for West Lake."},
]


def _write(path: Path, rows: list, bad_line: bool = False) -> Path:
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    if bad_line:
        lines.insert(1, "{not json")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _check_alpaca(records: list[dict], method: str) -> None:
    assert records
    ids = [r["id"] for r in records]
    assert len(set(ids)) == len(ids)
    for r in records:
        assert isinstance(r["instruction"], str) and r["instruction"].strip()
        assert isinstance(r["input"], str) and isinstance(r["output"], str) and r["output"].strip()
        assert r["source"] == method and r["provenance"]["method"] == method


@pytest.fixture(scope="module")
def served(tiny_model, tiny_model_dir):
    """`knowlm serve`'s app over the tiny model on a free loopback port."""
    from knowlm.infer.batching import BatchingEngine, EngineConfig
    from knowlm.serve import BackgroundServer, Service, create_app

    model, tokenizer = tiny_model
    engine = BatchingEngine(model, tokenizer, EngineConfig(max_batch_size=8, num_threads=1))
    server = BackgroundServer(create_app(Service.from_engine(engine, str(tiny_model_dir)), graceful_timeout=5)).start()
    yield server.url
    server.stop()


def test_self_instruct_against_knowlm_serve(served, tmp_path):
    seeds = _write(tmp_path / "seeds.jsonl", SEEDS, bad_line=True)
    out = tmp_path / "gen.jsonl"
    llm = EndpointLLM(served, concurrency=2)
    config = SelfInstructConfig(num_instructions=3, requests_per_round=2, max_tokens=24, max_rounds=3)
    stats = self_instruct(seeds, out, llm, config)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    _check_alpaca(records, "self-instruct")
    assert stats["records"] == len(records) <= 3
    assert stats["skipped_input"] == {"invalid_json": 1}
    assert stats["requests"]["failed"] == 0 and stats["requests"]["answered"] >= 2
    assert all(r["provenance"]["model"] == llm.name and r["provenance"]["examples"] for r in records)
    assert not out.with_name("gen.jsonl.partial").exists()


class StubLLM:
    """Answers from a function; records every prompt it was asked."""

    name = "stub"

    def __init__(self, answer):
        self.answer, self.asked, self.stats = answer, [], CallStats()

    def generate(self, prompts, params):
        self.asked += list(prompts)
        self.stats.requests += len(prompts)
        return [self.answer(p) for p in prompts]


def test_backtranslation_resumes_after_failures(tmp_path):
    texts = [{"id": f"t{i}", "text": f"Document number {i} explains how the West Lake in Hangzhou was formed and protected."} for i in range(6)]
    source = _write(tmp_path / "texts.jsonl", texts + [{"id": "short", "text": "too short"}], bad_line=True)
    out = tmp_path / "bt.jsonl"
    config = BacktranslationConfig(batch_size=2)
    # First run: the endpoint fails for the batch holding text 3.
    flaky = StubLLM(lambda p: None if "number 3" in p else "Instruction: How was the West Lake formed?")
    stats = backtranslate(source, out, flaky, config)
    assert stats["complete"] is False and stats["dropped"] == {"request_failed": 1}
    assert not out.exists() and out.with_name("bt.jsonl.partial").exists()
    assert stats["skipped_input"] == {"too_short": 1, "invalid_json": 1}
    with open(out.with_name("bt.jsonl.partial"), "a", encoding="utf-8") as handle:
        handle.write('{"instruction": "torn wri')  # a crash mid-write must not break the resume
    # Second run: only the failed batch is asked again.
    good = StubLLM(lambda p: "How was the West Lake formed?")
    stats = backtranslate(source, out, good, config)
    assert stats["complete"] is True and stats["resumed_batches"] == 2 and len(good.asked) == 2
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    _check_alpaca(records, "backtranslation")
    assert [r["provenance"]["text_id"] for r in records] == [f"t{i}" for i in range(6)]
    assert records[0]["instruction"] == "How was the West Lake formed?"  # the label is stripped
    assert not out.with_name("bt.jsonl.partial").exists()


def test_resume_with_other_settings_is_refused(tmp_path):
    source = _write(tmp_path / "texts.jsonl", [{"text": "A long enough text about Hangzhou and its lake, for the test."}])
    out = tmp_path / "bt.jsonl"
    backtranslate(source, out, StubLLM(lambda p: None), BacktranslationConfig(batch_size=1))
    with pytest.raises(KnowlmError, match="other settings"):
        backtranslate(source, out, StubLLM(lambda p: "x"), BacktranslationConfig(batch_size=1, temperature=0.1))


def test_self_instruct_resumes_rounds(tmp_path):
    seeds = _write(tmp_path / "seeds.jsonl", SEEDS)
    out = tmp_path / "si.jsonl"
    counter = iter(range(10_000))

    def answer(prompt):
        n = next(counter)
        if prompt.startswith("Write one example"):
            return f"Input: <noinput>\nOutput: answer {n}"
        words = lambda k: " ".join(random.Random(n * 10 + k).sample(VOCAB, 8))  # distinct: ROUGE-L novel
        return "\n".join(f"{k}. Explain {words(k)}" for k in range(5, 8))

    config = SelfInstructConfig(num_instructions=4, requests_per_round=1, new_per_request=2)
    first = self_instruct(seeds, out, StubLLM(answer), config)
    assert first["records"] == 4 and first["rounds"] == 2
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    _check_alpaca(records, "self-instruct")
    assert records[0]["input"] == "" and records[0]["output"].startswith("answer")
    # an interrupted run: keep the first round only, then resume
    partial = out.with_name("si.jsonl.partial")
    from knowlm.instruct.resume import PartialLog

    log = PartialLog(partial.with_name("si2.jsonl"), {"method": "self-instruct", "seeds": str(seeds.resolve()), "model": "stub", **__import__("dataclasses").asdict(config)})
    log.commit("round-0", [{k: v for k, v in r.items()} for r in records[:2]])
    stub = StubLLM(answer)
    resumed = self_instruct(seeds, partial.with_name("si2.jsonl"), stub, config)
    assert resumed["resumed_rounds"] == 1 and resumed["records"] == 4 and len(stub.asked) == 1 + 2


def test_parsers_of_generated_text():
    assert parse_instructions("9. Write a poem about autumn.\n10) 写一首关于秋天的诗\n- Instruction: List three fruits\n\n") == [
        "Write a poem about autumn.", "写一首关于秋天的诗", "List three fruits"]
    assert parse_instance("Input: 2+2\nOutput: 4") == ("2+2", "4")
    assert parse_instance("输入：<无>\n输出：杭州") == ("", "杭州")
    assert parse_instance("just an answer") == ("", "just an answer")
    assert parse_instance("Input: x\nOutput:   ") is None
    config = SelfInstructConfig()
    assert instruction_problem("Draw a picture of a cat.", config) == "needs_non_text"
    assert instruction_problem("Hi", config) == "too_short"
    assert instruction_problem("Explain why the sky is blue.", config) is None


def test_local_model_backtranslation(tiny_model, tiny_model_dir, tmp_path):
    source = _write(tmp_path / "texts.jsonl", [{"text": "Zhejiang University is a public research university in Hangzhou, founded in 1897."},
                                               {"text": "浙江大学是一所位于杭州的综合性研究型大学，创建于1897年。"}])
    from knowlm.infer import Generator

    llm = LocalLLM(str(tiny_model_dir), generator=Generator(*tiny_model))
    stats = backtranslate(source, tmp_path / "bt.jsonl", llm, BacktranslationConfig(max_tokens=12, temperature=0.0))
    assert stats["complete"] and stats["texts"] == 2 and stats["requests"]["requests"] == 2
    for line in (tmp_path / "bt.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        assert record["source"] == "backtranslation" and record["output"] and record["instruction"]


# --- the endpoint client: retries with back-off, failures counted, fatal errors fail fast ---------------

def _flaky_app(fail_first: int, status: int = 503):
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app, calls = FastAPI(), {"n": 0}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": "flaky", "object": "model", "created": 0, "owned_by": "test"}]}

    @app.post("/v1/chat/completions")
    def chat(body: dict):
        calls["n"] += 1
        if calls["n"] <= fail_first:
            return JSONResponse({"error": {"message": "busy"}}, status_code=status)
        return {"id": "c", "object": "chat.completion", "created": 0, "model": "flaky",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Score: 4"}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    return app, calls


def test_endpoint_retries_with_backoff_then_succeeds():
    from knowlm.serve import BackgroundServer

    app, calls = _flaky_app(fail_first=2)
    with BackgroundServer(app) as url:
        llm = EndpointLLM(url + "/v1/", concurrency=1, backoff=0.01)
        assert llm.generate(["hi"], LLMParams(max_tokens=4)) == ["Score: 4"]
    assert calls["n"] == 3 and llm.stats.retries == 2 and llm.stats.errors == {"http_503": 2} and llm.stats.failed == 0


def test_endpoint_gives_up_and_counts_failures():
    from knowlm.serve import BackgroundServer

    app, _ = _flaky_app(fail_first=10_000, status=429)
    with BackgroundServer(app) as url:
        llm = EndpointLLM(url, concurrency=2, max_retries=2, backoff=0.01)
        assert llm.generate(["a", "b"], LLMParams(max_tokens=4)) == [None, None]
    assert llm.stats.failed == 2 and llm.stats.retries == 4


def test_endpoint_wrong_key_fails_fast():
    from knowlm.serve import BackgroundServer

    app, calls = _flaky_app(fail_first=10_000, status=401)
    with BackgroundServer(app) as url:
        llm = EndpointLLM(url, model="flaky", backoff=0.01)
        with pytest.raises(KnowlmError, match="api-key"):
            llm.generate(["a"], LLMParams(max_tokens=4))
    assert calls["n"] == 1


def test_kg2instruct_generator(tmp_path):
    from knowlm import resources

    corpus = tmp_path / "corpus.jsonl"  # the first documents of the bundled corpus keep it quick
    corpus.write_text("".join(resources.corpus_path().read_text(encoding="utf-8").splitlines(keepends=True)[:12]), encoding="utf-8")
    out = tmp_path / "kg.jsonl"
    stats = kg_instructions([corpus], [resources.kg_path()], out, schema_path=resources.kg_schema_path())
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    _check_alpaca(records, "kg2instruct")
    assert stats["records"] == len(records) and stats["triples"] > 0
    assert {r["provenance"]["split"] for r in records} == {"train"}
    assert all(r["provenance"]["task"] == "re" for r in records)
