"""The HTTP API on a real uvicorn server: KnowLM /generate, the official openai client
(streaming and not), /extract, auth, limits, malformed input, disconnects, metrics, shutdown."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest


def test_knowlm_generate_round_trip(live_server):
    url, service = live_server
    body = {"instruction": "你好", "input": "", "parameters": {"temperature": 0, "top_p": 0.9, "top_k": 40, "max_tokens": 12, "num_beams": 1, "repetition_penalty": 1.0}}
    reply = httpx.post(f"{url}/generate", json=body, timeout=30)
    assert reply.status_code == 200
    data = reply.json()
    assert set(data) == {"generated_text", "num_output_tokens_cf", "error"}
    assert data["error"] is None and 1 <= data["num_output_tokens_cf"] <= 12
    assert "</s>" not in data["generated_text"]
    # The prompt was built with the model's saved template (alpaca): same answer as the engine given that prompt.
    target = service.resolve(None)
    prompt = service.prompt(target, "你好", "")
    from knowlm.infer import DecodingParams

    direct = service.engine.generate(prompt, DecodingParams(max_new_tokens=12, top_p=0.9, top_k=40, stop=service.template_stops(target)))
    assert data["generated_text"] == direct.text
    beams = httpx.post(f"{url}/generate", json={"instruction": "hi", "parameters": {"num_beams": 2, "max_tokens": 4}}, timeout=30)
    assert beams.status_code == 200 and beams.json()["num_output_tokens_cf"] <= 4


def test_openai_client_chat_and_completions(live_server):
    from openai import OpenAI

    url, service = live_server
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)
    assert [m.id for m in client.models.list().data] == service.model_names()
    messages = [
        {"role": "system", "content": "You extract knowledge."},
        {"role": "user", "content": "Where is Zhejiang University?"},
        {"role": "assistant", "content": "Hangzhou."},
        {"role": "user", "content": "And Apple?"},
    ]
    reply = client.chat.completions.create(model=service.default, messages=messages, max_tokens=10, temperature=0)
    text = reply.choices[0].message.content
    assert reply.object == "chat.completion" and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens <= 10 and reply.usage.prompt_tokens > 20
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

    stream = client.chat.completions.create(
        model=service.default, messages=messages, max_tokens=10, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens

    completion = client.completions.create(model=service.default, prompt="The capital of", max_tokens=6, temperature=0, stop=["\n"])
    assert completion.object == "text_completion" and completion.usage.completion_tokens <= 6
    pieces = list(client.completions.create(model=service.default, prompt="The capital of", max_tokens=6, temperature=0, stop=["\n"], stream=True))
    assert "".join(p.choices[0].text for p in pieces if p.choices) == completion.choices[0].text

    from openai import BadRequestError, NotFoundError

    with pytest.raises(NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=messages[:2], max_tokens=2)
    with pytest.raises(BadRequestError):
        client.chat.completions.create(model=service.default, messages=messages[:3], max_tokens=2)  # ends with the assistant


# One /extract request per task shape; each must answer exactly what the library extracts. Extend freely
# (e.g. with a trained IE model's exact records).
EXTRACT_CASES = [
    {"text": "浙江大学位于杭州。", "task": "ner", "schema": ["组织机构", "地理位置"], "lang": "zh"},
    {"text": "Tim Cook leads Apple.", "task": "re", "schema": {"CEO of": "person leads company"}, "split_num": 1},
    {"text": "Apple acquired Beats in 2014.", "task": "ee", "schema": [{"event_type": "acquisition", "arguments": ["buyer", "target"]}], "id": "d1"},
    {"text": "Apple acquired Beats in 2014.", "task": "eet", "schema": ["acquisition", "layoff"], "lang": "en"},
    {"text": "Apple acquired Beats in 2014.", "task": "eea", "schema": [{"event_type": "acquisition", "trigger": ["acquired"], "arguments": ["buyer", "target"]}]},
    {"text": "马云出生于杭州。", "task": "spo", "schema": [{"subject_type": "人物", "predicate": "出生地", "object_type": "地点"}], "lang": "zh"},
]


@pytest.mark.parametrize("case", EXTRACT_CASES + [{**EXTRACT_CASES[0], "constrained": True}, {**EXTRACT_CASES[5], "constrained": True}],
                         ids=lambda c: c["task"] + ("-constrained" if c.get("constrained") else ""))
def test_extract_returns_the_records_the_library_extracts(live_server, tiny_model, case):
    """/extract over the shared batching engine answers exactly what extract_texts gives with the
    batched HF Generator (same template, ie preset capped at the server's max_tokens)."""
    import importlib.util

    from knowlm.decoding import preset
    from knowlm.ie import extract_texts
    from knowlm.ie.records import validate
    from knowlm.infer import Generator

    if case.get("constrained") and not importlib.util.find_spec("xgrammar"):
        pytest.skip("constrained decoding needs xgrammar")
    url, service = live_server
    reference = Generator(*tiny_model)
    assert reference.template == service.resolve(None).template == "alpaca"
    params = preset("ie").updated(max_new_tokens=service.limits.max_tokens)
    reply = httpx.post(f"{url}/extract", json=case, timeout=60)
    assert reply.status_code == 200, reply.text
    doc = {"text": case["text"], "id": case["id"]} if "id" in case else {"text": case["text"]}
    expected, = extract_texts(reference, [doc], case["task"], case["schema"], lang=case.get("lang", "auto"),
                              split_num=case.get("split_num"), constrained=case.get("constrained", False), params=params)
    assert validate(reply.json()) == expected and reply.json()["id"] == case.get("id", "0")
    assert reply.json().get("task") == (case["task"] if case["task"] in ("eet", "eea", "spo") else None)


def test_extract_refuses_bad_schemas(live_server):
    url, _ = live_server
    bad = httpx.post(f"{url}/extract", json={"text": "x", "task": "ee", "schema": [5]}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"].startswith("invalid request: schema")
    empty = httpx.post(f"{url}/extract", json={"text": "x", "task": "ner", "schema": []}, timeout=30)
    assert (empty.status_code, empty.json()) == (400, {"error": "bad schema: schema: expected a non-empty list of type names"})
    spo = httpx.post(f"{url}/extract", json={"text": "x", "task": "spo", "schema": ["出生地"]}, timeout=30)
    assert spo.status_code == 400 and "subject_type" in spo.json()["error"]


def test_limits_and_malformed_requests_get_4xx_json(live_server):
    url, _ = live_server
    post = lambda path, **kw: httpx.post(f"{url}{path}", timeout=30, **kw)  # noqa: E731
    cases = [
        (post("/generate", content=b"{not json", headers={"content-type": "application/json"}), 400),
        (post("/generate", json={"input": "no instruction"}), 400),
        (post("/generate", json={"instruction": "x", "parameters": {"top_p": 0}}), 400),
        (post("/generate", json={"instruction": "x", "parameters": {"max_tokens": 41}}), 400),  # over the server's limit
        (post("/generate", json={"instruction": "x", "parameters": {"do_sample": True, "temperature": 0}}), 400),
        (post("/generate", json={"instruction": "x", "parameters": {"bogus": 1}}), 400),
        (post("/generate", json={"instruction": "x" * 30_000}), 413),  # body limit (20 kB here)
        (post("/generate", content=iter([b'{"instruction": "', b"y" * 25_000, b'"}']), headers={"content-type": "application/json"}), 413),  # chunked
        (post("/v1/chat/completions", json={"messages": []}), 400),
        (post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "n": 9}), 400),
        (post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}), 400),
        (post("/v1/completions", json={"prompt": [[1, 2]]}), 400),
        (post("/v1/completions", json={"prompt": "a", "model": "nope"}), 404),
        (post("/extract", json={"text": "x", "task": "sentiment", "schema": ["a"]}), 400),
        (httpx.get(f"{url}/no/such/route"), 404),
        (httpx.get(f"{url}/generate"), 405),
    ]
    for response, status in cases:
        assert response.status_code == status, (response.request.url, response.text)
        assert "error" in response.json()
    assert isinstance(cases[0][0].json()["error"], str)  # KnowLM routes: a string
    assert isinstance(cases[8][0].json()["error"]["message"], str)  # /v1 routes: OpenAI's error object


def test_queue_limit_answers_429(tiny_model, tiny_model_dir):
    from knowlm.infer.batching import BatchingEngine, EngineConfig
    from knowlm.serve import BackgroundServer, Service, create_app

    model, tokenizer = tiny_model
    engine = BatchingEngine(model, tokenizer, EngineConfig(max_batch_size=1, max_waiting=1, num_threads=1))
    app = create_app(Service.from_engine(engine, str(tiny_model_dir)), graceful_timeout=2)
    statuses = []
    with BackgroundServer(app) as url:
        def call():
            r = httpx.post(f"{url}/generate", json={"instruction": "x", "parameters": {"max_tokens": 60}}, timeout=60)
            statuses.append((r.status_code, r.json(), r.headers.get("retry-after")))

        threads = [threading.Thread(target=call) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    codes = sorted(s for s, _, _ in statuses)
    assert 429 in codes and 200 in codes and set(codes) <= {200, 429}
    assert all("error" in body and retry == "1" for s, body, retry in statuses if s == 429)


def test_auth_required_on_every_route_but_health(tiny_model, tiny_model_dir, monkeypatch):
    from knowlm.infer.batching import BatchingEngine, EngineConfig
    from knowlm.serve import BackgroundServer, Service, create_app

    model, tokenizer = tiny_model
    app = create_app(Service.from_engine(BatchingEngine(model, tokenizer, EngineConfig(num_threads=1)), str(tiny_model_dir)), api_key="s3cret", graceful_timeout=2)
    with BackgroundServer(app) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        for method, path in (("GET", "/v1/models"), ("GET", "/is_ready"), ("GET", "/metrics"), ("GET", "/openapi.json"), ("POST", "/generate")):
            assert httpx.request(method, f"{url}{path}", json={"instruction": "x"}).status_code == 401
            wrong = httpx.request(method, f"{url}{path}", json={"instruction": "x"}, headers={"Authorization": "Bearer s3cres"})
            assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        good = {"Authorization": "Bearer s3cret"}
        assert httpx.get(f"{url}/v1/models", headers=good).status_code == 200
        reply = httpx.post(f"{url}/generate", json={"instruction": "x", "parameters": {"max_tokens": 3}}, headers=good, timeout=30)
        assert reply.status_code == 200
        from openai import AuthenticationError, OpenAI

        with pytest.raises(AuthenticationError):
            OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
        assert OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0).models.list().data


def test_client_disconnect_cancels_generation(live_server):
    url, service = live_server
    engine = service.engine
    before = engine.cancelled_requests
    body = {"messages": [{"role": "user", "content": "talk"}], "max_tokens": 24, "stream": True, "temperature": 0}
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    break  # first chunk arrived: hang up
    deadline = time.time() + 5
    while engine.cancelled_requests == before and time.time() < deadline:
        time.sleep(0.02)
    assert engine.cancelled_requests > before


def test_metrics_and_readiness(live_server):
    url, _ = live_server
    httpx.post(f"{url}/generate", json={"instruction": "x", "parameters": {"max_tokens": 2}}, timeout=30)
    assert httpx.get(f"{url}/is_ready").json()["is_ready"] is True
    text = httpx.get(f"{url}/metrics").text
    assert 'knowlm_requests_total{route="/generate",status="200"}' in text
    for name in ("knowlm_queue_depth", "knowlm_tokens_per_second", "knowlm_decode_passes_total", "knowlm_request_seconds_sum"):
        assert name in text
    data = httpx.get(f"{url}/metrics", params={"format": "json"}).json()
    assert data["engine"]["generated_tokens"] > 0 and data["completion_tokens"] > 0


def test_graceful_shutdown_finishes_in_flight_requests(tiny_model, tiny_model_dir):
    from knowlm.infer.batching import BatchingEngine, EngineConfig
    from knowlm.serve import BackgroundServer, Service, create_app

    model, tokenizer = tiny_model
    engine = BatchingEngine(model, tokenizer, EngineConfig(num_threads=1))
    server = BackgroundServer(create_app(Service.from_engine(engine, str(tiny_model_dir)), graceful_timeout=20), graceful_timeout=20).start()
    result = {}

    def call():
        r = httpx.post(f"{server.url}/generate", json={"instruction": "x", "parameters": {"max_tokens": 150}}, timeout=60)
        result["status"], result["body"] = r.status_code, r.json()

    worker = threading.Thread(target=call)
    worker.start()
    deadline = time.time() + 5
    while not engine.busy() and time.time() < deadline:
        time.sleep(0.005)
    server.stop()
    worker.join()
    assert result["status"] == 200 and result["body"]["num_output_tokens_cf"] == 150
    from knowlm.infer.backends import EngineStoppedError, GenerationRequest

    with pytest.raises(EngineStoppedError, match="^the engine is not accepting requests \\(shutting down\\)$"):
        engine.submit(GenerationRequest("x"))
