"""OpenAI parity, checked with the official ``openai`` client against the live server: seeds, n,
logprobs, list-of-prompts completions, response_format (json_schema, json_object, ``.parse()`` with a
pydantic model), penalties, vLLM extensions, refused options, /tokenize, /detokenize, /version."""

from __future__ import annotations

import json

import httpx
import pytest

from knowlm.decoding import DecodingParams


@pytest.fixture(scope="module")
def client(live_server):
    from openai import OpenAI

    url, _ = live_server
    return OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_seeds_reproduce_and_differ(client):
    seeds = (1, 2, 3, 7, 8, 1000)
    texts = [client.completions.create(model="model", prompt="The capital of", max_tokens=8, temperature=1, seed=s).choices[0].text for s in seeds]
    assert len(set(texts)) == len(seeds)
    again = client.completions.create(model="model", prompt="The capital of", max_tokens=8, temperature=1, seed=7).choices[0].text
    assert again == texts[3]
    messages = [{"role": "user", "content": "Tell me about Hangzhou"}]
    chats = [client.chat.completions.create(model="model", messages=messages, max_tokens=8, seed=s).choices[0].message.content for s in (5, 5, 6)]
    assert chats[0] == chats[1] != chats[2]


def test_n_choices_streamed_or_not(client):
    messages = [{"role": "user", "content": "hello"}]
    reply = client.chat.completions.create(messages=messages, model="model", max_tokens=6, n=3, seed=9)
    texts = [c.message.content for c in reply.choices]
    assert [c.index for c in reply.choices] == [0, 1, 2] and len(set(texts)) == 3
    stream = client.chat.completions.create(messages=messages, model="model", max_tokens=6, n=3, seed=9, stream=True, stream_options={"include_usage": True})
    streamed = ["", "", ""]
    chunks = list(stream)
    for chunk in chunks:
        for choice in chunk.choices:
            streamed[choice.index] += choice.delta.content or ""
    assert streamed == texts
    assert chunks[-1].usage.model_dump() == reply.usage.model_dump()
    assert reply.usage.prompt_tokens == client.chat.completions.create(messages=messages, model="model", max_tokens=1).usage.prompt_tokens


def test_list_of_prompts_and_completion_logprobs(client, live_server):
    _, service = live_server
    prompts = ["浙江大学位于", "The knowledge graph", "abc"]
    reply = client.completions.create(model="model", prompt=prompts, max_tokens=5, temperature=0, n=2, logprobs=2)
    assert [c.index for c in reply.choices] == list(range(6))
    alone = [client.completions.create(model="model", prompt=p, max_tokens=5, temperature=0) for p in prompts]
    assert [c.text for c in reply.choices] == [a.choices[0].text for a in alone for _ in range(2)]
    assert reply.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone)
    assert reply.usage.completion_tokens == 2 * sum(a.usage.completion_tokens for a in alone)
    for choice in reply.choices:
        lp = choice.logprobs
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) >= 1
        assert all(len(top) in (2, 3) and max(top.values()) == logprob for top, logprob in zip(lp.top_logprobs, lp.token_logprobs))
    echoed = client.completions.create(model="model", prompt="abc", max_tokens=5, temperature=0, echo=True)
    assert echoed.choices[0].text == "abc" + alone[2].choices[0].text


def test_chat_logprobs(client):
    reply = client.chat.completions.create(model="model", messages=[{"role": "user", "content": "hi"}], max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    for item in content:
        assert len(item.top_logprobs) == 3 and item.top_logprobs[0].logprob == item.logprob  # greedy: the top token
        assert item.top_logprobs[0].token == item.token and bytes(item.bytes).decode("utf-8", "replace") == item.token


def test_response_format_json_schema_json_object_and_parse(client):
    from pydantic import BaseModel, Field

    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "pattern": "[a-z]{1,3}"}, "ok": {"type": "boolean"}},
        "required": ["city", "ok"],
        "additionalProperties": False,
    }
    messages = [{"role": "user", "content": "Which city? Answer in JSON."}]
    for seed in (1, 2):
        reply = client.chat.completions.create(model="model", messages=messages, max_tokens=40, seed=seed,
                                               response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}})
        assert reply.choices[0].finish_reason == "stop"
        answer = json.loads(reply.choices[0].message.content)
        assert list(answer) == ["city", "ok"] and answer["city"].isalpha() and isinstance(answer["ok"], bool)
    text = client.completions.create(model="model", prompt="JSON:", max_tokens=24, temperature=0, extra_body={"response_format": {"type": "json_object"}}).choices[0]
    assert text.text.startswith("{") and (text.finish_reason == "length" or isinstance(json.loads(text.text), dict))

    class City(BaseModel):
        name: str = Field(pattern="^[a-z]{1,3}$")

    parsed = client.chat.completions.parse(model="model", messages=messages, max_tokens=40, seed=3, response_format=City)
    assert isinstance(parsed.choices[0].message.parsed, City)


def test_penalties_bias_and_vllm_extensions(client, live_server):
    _, service = live_server
    base = dict(model="model", prompt="Hello", max_tokens=10, temperature=0)
    plain = client.completions.create(**base).choices[0].text
    penalised = client.completions.create(**base, presence_penalty=1.5, frequency_penalty=1.0).choices[0].text
    want = service.engine.generate("Hello", DecodingParams(max_new_tokens=10, presence_penalty=1.5, frequency_penalty=1.0)).text
    assert penalised == want != plain
    token = service.engine.encode("知识", add_special_tokens=False)[-1]
    biased = client.completions.create(**base, logit_bias={str(token): 100})
    assert biased.choices[0].text == service.engine.decode([token] * 10)
    eos = service.engine.tokenizer.eos_token_id
    held = client.completions.create(**base, logit_bias={str(eos): 100}, extra_body={"min_tokens": 3})
    assert (held.usage.completion_tokens, held.choices[0].finish_reason) == (3, "stop")
    stopped = client.completions.create(**base, extra_body={"stop_token_ids": [token]}, logit_bias={str(token): 100})
    assert stopped.usage.completion_tokens == 1 and stopped.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("kwargs, name", [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
    ({"extra_body": {"suffix": "tail"}}, "suffix"),
    ({"extra_body": {"best_of": 3}}, "best_of"),
    ({"extra_body": {"mirostat": 1}}, "mirostat"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}]}, "image_url"),
])
def test_unsupported_options_are_refused_by_name(client, kwargs, name):
    from openai import BadRequestError

    args = {"model": "model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **kwargs}
    with pytest.raises(BadRequestError) as caught:
        client.chat.completions.create(**args)
    assert caught.value.status_code == 400 and name in caught.value.message


def test_tokenize_detokenize_version(live_server):
    url, service = live_server
    ids = httpx.post(f"{url}/tokenize", json={"prompt": "浙江大学位于杭州", "return_token_strs": True}).json()
    assert ids["tokens"] == service.engine.encode("浙江大学位于杭州") and ids["count"] == len(ids["tokens"])
    assert ids["max_model_len"] == service.engine.max_context and len(ids["token_strs"]) == ids["count"]
    from knowlm.serve.openai_schemas import ChatMessage

    chat = httpx.post(f"{url}/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}).json()
    assert chat["tokens"] == service.engine.encode(service.chat_prompt(service.resolve(None), [ChatMessage(role="user", content="hi")]))
    assert httpx.post(f"{url}/detokenize", json={"tokens": ids["tokens"]}).json() == {"prompt": "浙江大学位于杭州"}
    assert httpx.post(f"{url}/detokenize", json={"tokens": [10**7]}).status_code == 400
    from knowlm import __version__

    assert httpx.get(f"{url}/version").json() == {"version": __version__}



def test_a_schema_the_grammar_compiler_refuses_is_a_400(client):
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as caught:
        client.chat.completions.create(model="model", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                       response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}})
    assert caught.value.message.endswith('the JSON schema cannot be used: Unsupported type "nonsense"')
