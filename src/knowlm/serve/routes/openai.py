"""OpenAI-compatible ``POST /v1/completions`` (raw prompts) and ``POST /v1/chat/completions`` (the
model's template): ``n`` choices, list-of-prompts completions, logprobs, ``response_format`` JSON
output, streamed as server-sent events with ``"stream": true``. Response shapes follow OpenAI's
API as vLLM's server produces them."""

from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import APIRouter, Depends, Request

from knowlm.infer.backends import Event
from knowlm.serve.errors import error_responses
from knowlm.serve.openai_schemas import ChatRequest, CompletionRequest, ResponseFormat
from knowlm.serve.routes.common import get_service, results, sse, usage
from knowlm.serve.service import Service

router = APIRouter(tags=["OpenAI"])
ERRORS = error_responses(400, 401, 404, 413, 429, 500, 503, openai=True)
STREAMED = {200: {"description": "JSON, or with \"stream\": true server-sent events (data: {chunk} lines, then data: [DONE])",
                  "content": {"application/json": {}, "text/event-stream": {"schema": {"type": "string"}}}}}


def _finish(event: Event) -> str:
    return event.finish_reason if event.finish_reason in ("stop", "length") else "stop"


def _processors(service: Service, response_format: ResponseFormat | None):
    """Grammar processors for ``response_format`` (built fresh per choice), or None for plain text."""
    if response_format is None or response_format.type == "text":
        return None
    schema = response_format.json_schema.schema_ if response_format.type == "json_schema" else None
    return service.json_processors(schema)


def _chat_logprobs(service: Service, entries: list | None) -> dict | None:
    if entries is None:
        return None
    content = []
    for token, logprob, top in entries:
        text, raw = service.token_text(token)
        alternatives = [dict(zip(("token", "bytes"), service.token_text(t)), logprob=lp) for t, lp in top]
        content.append({"token": text, "logprob": logprob, "bytes": raw, "top_logprobs": alternatives})
    return {"content": content, "refusal": None}


def _completion_logprobs(service: Service, entries: list | None, offset: int) -> dict | None:
    if entries is None:
        return None
    out: dict = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for token, logprob, top in entries:
        text = service.token_text(token)[0]
        out["tokens"].append(text)
        out["token_logprobs"].append(logprob)
        out["top_logprobs"].append({service.token_text(t)[0]: lp for t, lp in [*top, (token, logprob)]})
        out["text_offset"].append(offset)
        offset += len(text)
    return out


@router.post("/v1/completions", summary="OpenAI-compatible text completion (raw prompts, no template)", responses={**ERRORS, **STREAMED})
async def completions(body: CompletionRequest, request: Request, service: Service = Depends(get_service)):
    target = service.resolve(body.model)
    params = service.params(body.decoding_fields(), default_max_tokens=service.limits.completion_default_max_tokens)
    prompts, n = body.prompts, body.n
    handles = service.submit_choices(target, prompts, params, n, asyncio.get_running_loop(), _processors(service, body.response_format), body.logprobs)
    ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

    def envelope(choices: list, **extra) -> dict:
        return {"id": ident, "object": "text_completion", "created": created, "model": target.name, "choices": choices, **extra}

    if body.stream:
        offsets = [len(prompts[i // n]) if body.echo else 0 for i in range(len(handles))]
        started: set[int] = set()

        def chunk(index: int, event: Event) -> dict | None:
            text = event.text
            if body.echo and index not in started:
                text = prompts[index // n] + text
            started.add(index)
            if not text and not event.logprobs:
                return None
            logprobs = _completion_logprobs(service, event.logprobs or [], offsets[index]) if body.logprobs is not None else None
            offsets[index] += len(text)
            return envelope([{"index": index, "text": text, "logprobs": logprobs, "finish_reason": None}])

        return sse(
            request, handles, chunk,
            final=lambda index, event: envelope([{"index": index, "text": "", "logprobs": None, "finish_reason": _finish(event)}]),
            usage_chunk=(lambda p, c: envelope([], usage=usage(p, c))) if body.stream_options and body.stream_options.include_usage else None,
            n=n,
        )
    done = await results(request, handles, n)
    choices = []
    for index, result in enumerate(done):
        prefix = prompts[index // n] if body.echo else ""
        logprobs = _completion_logprobs(service, result.logprobs, 0) if body.logprobs is not None else None
        choices.append({"index": index, "text": prefix + result.text, "logprobs": logprobs, "finish_reason": result.finish_reason})
    return envelope(choices, usage=usage(*request.state.usage))


@router.post("/v1/chat/completions", summary="OpenAI-compatible chat (prompt built with the model's template)", responses={**ERRORS, **STREAMED})
async def chat(body: ChatRequest, request: Request, service: Service = Depends(get_service)):
    target = service.resolve(body.model)
    prompt = service.chat_prompt(target, body.messages)
    params = service.params(body.decoding_fields(), default_max_tokens=service.limits.default_max_tokens, extra_stop=service.template_stops(target))
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    handles = service.submit_choices(target, [prompt], params, body.n, asyncio.get_running_loop(), _processors(service, body.response_format), logprobs)
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def envelope(choices: list, kind: str, **extra) -> dict:
        return {"id": ident, "object": kind, "created": created, "model": target.name, "choices": choices, **extra}

    if body.stream:
        started: set[int] = set()

        def chunk(index: int, event: Event) -> dict | None:
            first = index not in started
            started.add(index)
            if not first and not event.text and not event.logprobs:
                return None
            delta = {"role": "assistant", "content": event.text} if first else {"content": event.text}
            choice_logprobs = _chat_logprobs(service, event.logprobs or []) if logprobs is not None else None
            return envelope([{"index": index, "delta": delta, "logprobs": choice_logprobs, "finish_reason": None}], "chat.completion.chunk")

        return sse(
            request, handles, chunk,
            final=lambda index, event: envelope([{"index": index, "delta": {}, "logprobs": None, "finish_reason": _finish(event)}], "chat.completion.chunk"),
            usage_chunk=(lambda p, c: envelope([], "chat.completion.chunk", usage=usage(p, c))) if body.stream_options and body.stream_options.include_usage else None,
            n=body.n,
        )
    done = await results(request, handles, body.n)
    choices = [
        {"index": index, "message": {"role": "assistant", "content": result.text}, "logprobs": _chat_logprobs(service, result.logprobs),
         "finish_reason": result.finish_reason}
        for index, result in enumerate(done)
    ]
    return envelope(choices, "chat.completion", usage=usage(*request.state.usage))
