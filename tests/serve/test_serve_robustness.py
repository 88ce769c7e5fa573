"""One bad request never hurts another, over HTTP: bad numerics beside streams, lone surrogates on
every route, beam search beside the batch (cancelled when its client leaves), one status per kind of
error, KnowLM's request shapes, CORS, and the README's curl examples run as printed."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from knowlm.decoding import DecodingParams

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def roomy_server(tiny_model, tiny_model_dir):
    """The app with room for long answers (beam search up to the model's context)."""
    from knowlm.infer.batching import BatchingEngine, EngineConfig
    from knowlm.serve import BackgroundServer, ServeLimits, Service, create_app

    model, tokenizer = tiny_model
    engine = BatchingEngine(model, tokenizer, EngineConfig(max_batch_size=16, num_threads=1))
    service = Service.from_engine(engine, str(tiny_model_dir), limits=ServeLimits(max_tokens=1000))
    server = BackgroundServer(create_app(service, graceful_timeout=5, cors_origins=["http://ui.example"])).start()
    yield server.url, service
    server.stop()


def _stream_text(url: str, body: dict) -> str:
    text = ""
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                assert "error" not in chunk, chunk
                text += "".join(c["delta"].get("content") or "" for c in chunk["choices"])
    return text


def test_bad_numerics_fail_alone_while_streams_beside_them_finish(live_server):
    url, _ = live_server
    bodies = [{"messages": [{"role": "user", "content": f"question {i}"}], "max_tokens": 16, "temperature": 0} for i in range(4)]
    alone = [httpx.post(f"{url}/v1/chat/completions", json=b, timeout=60).json()["choices"][0]["message"]["content"] for b in bodies]
    streamed, bad = [None] * 4, {}

    def stream(i):
        streamed[i] = _stream_text(url, bodies[i])

    def poison():
        reply = httpx.post(f"{url}/v1/completions", json={"prompt": "x", "repetition_penalty": 1e-300, "temperature": 1, "max_tokens": 30}, timeout=60)
        bad["status"], bad["body"] = reply.status_code, reply.json()

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(4)] + [threading.Thread(target=poison)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert streamed == alone
    assert bad["status"] == 400 and bad["body"]["error"]["type"] == "invalid_request_error"
    assert not re.search(r"nan|inf\b|tensor|Error|Traceback", bad["body"]["error"]["message"])


@pytest.mark.parametrize("path, raw", [
    ("/v1/completions", r'{"prompt": "\ud800x"}'),
    ("/v1/chat/completions", r'{"messages": [{"role": "user", "content": "\udfffa"}]}'),
    ("/v1/chat/completions", r'{"messages": [{"role": "user", "content": "\ud800"}], "stream": true}'),
    ("/extract", r'{"text": "x", "task": "ner", "schema": ["\ud800"]}'),
    ("/generate", r'{"instruction": "x", "parameters": {"stop": ["\udc00"]}}'),
    ("/generate", r'{"instruction": "x", "\ud800": 1}'),
    ("/tokenize", r'{"prompt": "a\ud800"}'),
])
def test_lone_surrogates_are_a_400_on_every_route(live_server, path, raw):
    url, _ = live_server
    reply = httpx.post(f"{url}{path}", content=raw.encode(), headers={"content-type": "application/json"}, timeout=30)
    assert reply.status_code == 400
    message = reply.json()["error"]["message"] if path.startswith("/v1/") else reply.json()["error"]
    assert "surrogate" in message


def test_beam_search_does_not_stall_others_and_stops_when_its_client_leaves(roomy_server):
    url, service = roomy_server
    engine = service.engine
    beam_body = {"instruction": "x", "parameters": {"num_beams": 8, "max_tokens": 900, "min_tokens": 900}}

    def beam_client():
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/generate", json=beam_body, timeout=2)

    thread = threading.Thread(target=beam_client)
    thread.start()
    deadline = time.time() + 5
    while not engine.stats()["beam_running"] and time.time() < deadline:
        time.sleep(0.01)
    started = time.perf_counter()
    quick = httpx.post(f"{url}/generate", json={"instruction": "hi", "parameters": {"max_tokens": 8}}, timeout=30)
    assert quick.status_code == 200 and time.perf_counter() - started < 2.5 and engine.stats()["beam_running"] == 1
    thread.join()
    deadline = time.time() + 5
    while engine.stats()["beam_running"] and time.time() < deadline:
        time.sleep(0.02)
    assert engine.stats()["beam_running"] == 0  # the search ended with its client


def test_one_status_per_kind_of_error(live_server):
    url, _ = live_server
    wrong_type = [
        ("/generate", {"instruction": "x", "parameters": {"temperature": "hot"}}),
        ("/v1/completions", {"prompt": "x", "temperature": "hot"}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
        ("/extract", {"text": "x", "task": "ner", "schema": ["a"], "parameters": {"temperature": "hot"}}),
        ("/tokenize", {"prompt": 5}),
    ]
    unknown = [("/v1/completions", {"prompt": "x", "mirostat": 2}), ("/extract", {"text": "x", "task": "ner", "schema": ["a"], "colour": 1}),
               ("/generate", {"instruction": "x", "parameters": {"beam_width": 2}})]
    for path, body in wrong_type + unknown:
        reply = httpx.post(f"{url}{path}", json=body, timeout=30)
        assert reply.status_code == 400, (path, reply.text)
    assert "mirostat" in httpx.post(f"{url}/v1/completions", json=unknown[0][1]).json()["error"]["message"]
    spec = httpx.get(f"{url}/openapi.json").json()
    statuses = {code for item in spec["paths"].values() for op in item.values() for code in op["responses"]}
    assert "422" not in statuses and {"400", "404", "413", "429", "503"} <= statuses
    chat = spec["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert "text/event-stream" in chat["200"]["content"] and chat["400"]["content"]["application/json"]["schema"]["$ref"].endswith("OpenAIError")


def test_knowlm_request_shapes(roomy_server):
    """What KnowLM's launch_vllm.py clients send: every `parameters` key it reads (penalties at 0 or
    not, top_k -1), extra top-level keys, and `parameters: null`."""
    url, service = roomy_server
    body = {"instruction": "介绍一下浙江大学", "input": "", "request_id": 7,
            "parameters": {"top_p": 0.7, "top_k": -1, "max_tokens": 16, "presence_penalty": 0.0, "frequency_penalty": 0.0, "temperature": 0}}
    reply = httpx.post(f"{url}/generate", json=body, timeout=30)
    assert reply.status_code == 200 and reply.json()["error"] is None
    body["parameters"].update(presence_penalty=1.2, frequency_penalty=0.8)
    penalised = httpx.post(f"{url}/generate", json=body, timeout=30).json()["generated_text"]
    target = service.resolve(None)
    want = service.engine.generate(service.prompt(target, "介绍一下浙江大学"), DecodingParams(
        max_new_tokens=16, top_p=0.7, presence_penalty=1.2, frequency_penalty=0.8, stop=service.template_stops(target))).text
    assert penalised == want
    assert httpx.post(f"{url}/generate", json={"instruction": "hi", "input": None, "parameters": None}, timeout=30).status_code == 200


def test_cors_preflight_and_answers(roomy_server):
    url, _ = roomy_server
    preflight = httpx.options(f"{url}/v1/chat/completions", headers={
        "Origin": "http://ui.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "http://ui.example"
    reply = httpx.get(f"{url}/v1/models", headers={"Origin": "http://ui.example"})
    assert reply.headers["access-control-allow-origin"] == "http://ui.example"
    assert "access-control-allow-origin" not in httpx.get(f"{url}/v1/models", headers={"Origin": "http://evil.example"}).headers


def test_readme_curl_examples_work_as_printed(roomy_server):
    url, _ = roomy_server
    text = README.read_text(encoding="utf-8")
    commands = [c for c in re.findall(r"^(curl .+?)$", text, flags=re.M) if "localhost:8090" in c]
    assert len(commands) >= 3
    for command in commands:
        args = shlex.split(command.replace("http://localhost:8090", url).replace("localhost:8090", url))
        done = subprocess.run([*args, "--max-time", "60", "-w", "\n%{http_code}"], capture_output=True, text=True, timeout=90)
        body, status = done.stdout.rsplit("\n", 1)
        assert status == "200", (command, body)
        json.loads(body)
