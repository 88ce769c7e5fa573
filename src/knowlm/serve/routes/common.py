"""What every router shares: the service, waiting with a disconnect watch, SSE, usage objects."""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator, Callable, Sequence

from fastapi import Request
from fastapi.responses import StreamingResponse

from knowlm.infer.backends import Event, RequestHandle
from knowlm.serve.errors import ApiError, error_body
from knowlm.serve.service import Service, Target

DISCONNECT_POLL_S = 0.25
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def get_service(request: Request) -> Service:
    """FastAPI dependency: the one service object of this app."""
    return request.app.state.service


async def await_or_cancel(request: Request, future: asyncio.Future, cancel: Callable[[], None]):
    """``await future``, but a client that disconnects cancels the work (``cancel()``) and gets 499;
    if the work fails, ``cancel()`` too (the other parts of a request stop with it)."""
    try:
        while True:
            done, _ = await asyncio.wait({future}, timeout=DISCONNECT_POLL_S)
            if done:
                return future.result()
            if await request.is_disconnected():
                raise ApiError(499, "client closed the request")
    except BaseException:
        cancel()
        raise
    finally:
        if not future.done():
            future.cancel()


def prompt_tokens(handles: Sequence[RequestHandle], n: int) -> int:
    """Prompt tokens of a request whose handles are ``n`` choices per prompt (each prompt counted once)."""
    return sum(handles[i].prompt_tokens for i in range(0, len(handles), n))


async def results(request: Request, handles: Sequence[RequestHandle], n: int = 1):
    """Every handle's Generation, in order; records token usage for the request log."""

    def cancel() -> None:
        for handle in handles:
            handle.cancel()

    done = await await_or_cancel(request, asyncio.ensure_future(asyncio.gather(*(h.aresult() for h in handles))), cancel)
    request.state.usage = (prompt_tokens(handles, n), sum(r.num_tokens for r in done))
    return done


async def complete(request: Request, service: Service, target: Target, prompt: str, params, processors=None):
    """Submit one generation and wait for its result."""
    handle = service.submit(target, prompt, params, loop=asyncio.get_running_loop(), processors=processors)
    return (await results(request, [handle]))[0]


async def _merged(handles: Sequence[RequestHandle]) -> AsyncIterator[tuple[int, Event]]:
    """Events of several handles as they come: ``(index, event)``, until every one has ended."""
    if len(handles) == 1:
        async for event in handles[0]:
            yield 0, event
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, handle: RequestHandle) -> None:
        async for event in handle:
            await queue.put((index, event))

    tasks = [asyncio.ensure_future(pump(i, h)) for i, h in enumerate(handles)]
    remaining = len(handles)
    try:
        while remaining:
            index, event = await queue.get()
            remaining -= bool(event.finished or event.error)
            yield index, event
    finally:
        for task in tasks:
            task.cancel()


def sse(request: Request, handles: Sequence[RequestHandle], chunk: Callable, final: Callable, usage_chunk: Callable | None, n: int = 1) -> StreamingResponse:
    """Server-sent events of one request's choices: ``chunk(i, event)`` per event (None: nothing to send),
    ``final(i, event)`` when choice ``i`` ends, then ``usage_chunk(prompt_tokens, completion_tokens)`` if
    asked, then ``[DONE]``. An error ends the stream with OpenAI's error object."""

    async def events() -> AsyncIterator[str]:
        completion_tokens, prompt = 0, prompt_tokens(handles, n)
        merged = _merged(handles)
        try:
            async for index, event in merged:
                if event.error:
                    yield f"data: {json.dumps(error_body('/v1/', event.status, event.error), ensure_ascii=False)}\n\n"
                    break
                body = chunk(index, event)
                if body is not None:
                    yield f"data: {json.dumps(body, ensure_ascii=False)}\n\n"
                if event.finished:
                    completion_tokens += event.num_tokens
                    yield f"data: {json.dumps(final(index, event), ensure_ascii=False)}\n\n"
            else:
                request.state.usage = (prompt, completion_tokens)
                if usage_chunk is not None:
                    yield f"data: {json.dumps(usage_chunk(prompt, completion_tokens), ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            await merged.aclose()
            for handle in handles:
                if not handle.done.is_set():
                    handle.cancel()  # the client went away (or an error): free the slots

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
