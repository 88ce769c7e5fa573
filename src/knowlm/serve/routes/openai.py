"""OpenAI-compatible ``POST /v1/completions`` (raw prompt) and ``POST /v1/chat/completions`` (the
model's template), streamed as server-sent events with ``"stream": true``."""

from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import APIRouter, Depends, Request

from knowlm.infer.backends import Event
from knowlm.serve.errors import ApiError
from knowlm.serve.routes.common import complete, get_service, sse, usage
from knowlm.serve.schemas import MAX_TEXT_CHARS, ChatRequest, CompletionRequest
from knowlm.serve.service import Service, chat_to_turns

router = APIRouter(tags=["OpenAI"])


def _finish(event: Event) -> str:
    return event.finish_reason if event.finish_reason in ("stop", "length") else "stop"


@router.post("/v1/completions", summary="OpenAI-compatible text completion (raw prompt, no template)")
async def completions(body: CompletionRequest, request: Request, service: Service = Depends(get_service)):
    target = service.resolve(body.model)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise ApiError(400, "prompt must be a string or a list with exactly one string")
    if body.echo:
        raise ApiError(400, "echo is not supported")
    if len(prompts[0]) > MAX_TEXT_CHARS:
        raise ApiError(400, f"prompt longer than {MAX_TEXT_CHARS} characters")
    params = service.params(body.decoding_fields(), default_max_tokens=service.limits.completion_default_max_tokens)
    ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

    def envelope(choice: dict, **extra) -> dict:
        return {"id": ident, "object": "text_completion", "created": created, "model": target.name, "choices": [choice], **extra}

    if body.stream:
        handle = service.submit(target, prompts[0], params, loop=asyncio.get_running_loop())
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse(
            request,
            handle,
            chunk=lambda text: envelope({"index": 0, "text": text, "logprobs": None, "finish_reason": None}),
            final=lambda ev: envelope({"index": 0, "text": "", "logprobs": None, "finish_reason": _finish(ev)}),
            usage_chunk=(lambda ev: {**envelope({}), "choices": [], "usage": usage(handle.prompt_tokens, ev.num_tokens)}) if include_usage else None,
        )
    result = await complete(request, service, target, prompts[0], params)
    choice = {"index": 0, "text": result.text, "logprobs": None, "finish_reason": result.finish_reason}
    return envelope(choice, usage=usage(result.prompt_tokens, result.num_tokens))


@router.post("/v1/chat/completions", summary="OpenAI-compatible chat (prompt built with the model's template)")
async def chat(body: ChatRequest, request: Request, service: Service = Depends(get_service)):
    target = service.resolve(body.model)
    if body.logprobs:
        raise ApiError(400, "logprobs is not supported")
    system, history, question = chat_to_turns(body.messages)
    prompt = service.prompt(target, question, "", system, history)
    params = service.params(body.decoding_fields(), default_max_tokens=service.limits.default_max_tokens, extra_stop=service.template_stops(target))
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def envelope(choices: list, kind: str, **extra) -> dict:
        return {"id": ident, "object": kind, "created": created, "model": target.name, "choices": choices, **extra}

    if body.stream:
        handle = service.submit(target, prompt, params, loop=asyncio.get_running_loop())
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        first = [True]

        def chunk(text: str) -> dict:
            delta = {"role": "assistant", "content": text} if first[0] else {"content": text}
            first[0] = False
            return envelope([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}], "chat.completion.chunk")

        return sse(
            request,
            handle,
            chunk=chunk,
            final=lambda ev: envelope([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": _finish(ev)}], "chat.completion.chunk"),
            usage_chunk=(lambda ev: envelope([], "chat.completion.chunk", usage=usage(handle.prompt_tokens, ev.num_tokens))) if include_usage else None,
        )
    result = await complete(request, service, target, prompt, params)
    message = {"role": "assistant", "content": result.text}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": result.finish_reason}
    return envelope([choice], "chat.completion", usage=usage(result.prompt_tokens, result.num_tokens))
