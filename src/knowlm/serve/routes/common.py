"""What every router shares: the service, waiting with a disconnect watch, SSE, usage objects."""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse

from knowlm.infer.backends import RequestHandle
from knowlm.serve.errors import ApiError, error_body
from knowlm.serve.service import Service, Target

DISCONNECT_POLL_S = 0.25


def get_service(request: Request) -> Service:
    """FastAPI dependency: the one service object of this app."""
    return request.app.state.service


async def await_or_cancel(request: Request, future: asyncio.Future, cancel: Callable[[], None]):
    """``await future``, but a client that disconnects cancels the work (``cancel()``) and gets 499."""
    try:
        while True:
            done, _ = await asyncio.wait({future}, timeout=DISCONNECT_POLL_S)
            if done:
                return future.result()
            if await request.is_disconnected():
                raise ApiError(499, "client closed the request")
    finally:
        if not future.done():
            cancel()
            future.cancel()


async def complete(request: Request, service: Service, target: Target, prompt: str, params, processors=None):
    """Submit one generation and wait for its result; records token usage for the request log."""
    handle = service.submit(target, prompt, params, loop=asyncio.get_running_loop(), processors=processors)
    result = await await_or_cancel(request, asyncio.ensure_future(handle.aresult()), handle.cancel)
    request.state.usage = (result.prompt_tokens, result.num_tokens)
    return result


def sse(request: Request, handle: RequestHandle, chunk, final, usage_chunk) -> StreamingResponse:
    """Server-sent events of one request: ``chunk(text)`` per delta, ``final(event)``, optional usage, ``[DONE]``."""

    async def events() -> AsyncIterator[str]:
        finished = False
        try:
            async for event in handle:
                if event.error:
                    body = error_body("/v1/", event.status, event.error)
                    yield f"data: {json.dumps(body, ensure_ascii=False)}\n\n"
                    break
                if event.text:
                    yield f"data: {json.dumps(chunk(event.text), ensure_ascii=False)}\n\n"
                if event.finished:
                    finished = True
                    request.state.usage = (handle.prompt_tokens, event.num_tokens)
                    yield f"data: {json.dumps(final(event), ensure_ascii=False)}\n\n"
                    if usage_chunk is not None:
                        yield f"data: {json.dumps(usage_chunk(event), ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            if not finished:
                handle.cancel()  # the client went away (or an error): free the slot

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
