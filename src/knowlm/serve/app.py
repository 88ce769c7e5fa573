"""The FastAPI app: KnowLM ``/generate``, OpenAI-compatible routes, ``/extract``, health and metrics.

Every answer is JSON; every error is a 4xx/5xx with ``{"error": ...}`` (a string on KnowLM
routes, OpenAI's ``{"message", "type", "code"}`` object under ``/v1``). Generation runs on the
shared backend, so concurrent requests are batched together; a client that disconnects
cancels its request, and shutdown drains in-flight requests before failing the rest.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
import uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from knowlm.errors import KnowlmError
from knowlm.infer.backends import BackendError, Event, RequestHandle
from knowlm.serve.metrics import Metrics
from knowlm.serve.schemas import (
    ChatRequest,
    CompletionRequest,
    ExtractRequest,
    GenerateRequest,
    GenerateResponse,
)
from knowlm.serve.service import ApiError, Service, Target, chat_to_turns

log = logging.getLogger("knowlm.serve")
OPEN_PATHS = ("/health",)


class BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int):
        super().__init__(status_code=413, detail=f"request body exceeds {limit} bytes")


def _error_body(path: str, status: int, message: str) -> dict:
    if path.startswith("/v1/"):
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "code": status}}
    return {"error": message}


def error_response(path: str, status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(_error_body(path, status, message), status_code=status, headers=headers)


class GuardMiddleware:
    """Outermost layer: bearer auth, body-size limit, request log line and metrics for every request."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int, metrics: Metrics):
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        self.max_body = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        path = scope.get("path", "")
        status = [0]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        headers = dict(scope.get("headers") or [])
        self.metrics.in_flight += 1
        try:
            if self.expected is not None and path not in OPEN_PATHS:
                given = headers.get(b"authorization", b"")
                if not hmac.compare_digest(given, self.expected):
                    response = error_response(path, 401, "missing or wrong API key (send Authorization: Bearer KEY)", {"WWW-Authenticate": "Bearer"})
                    return await response(scope, receive, send_wrapper)
            length = headers.get(b"content-length")
            if length is not None:
                try:
                    too_big = int(length) > self.max_body
                except ValueError:
                    return await error_response(path, 400, "bad Content-Length header")(scope, receive, send_wrapper)
                if too_big:
                    return await error_response(path, 413, f"request body exceeds {self.max_body} bytes")(scope, receive, send_wrapper)
            seen = [0]

            async def receive_limited():
                message = await receive()
                if message["type"] == "http.request":
                    seen[0] += len(message.get("body", b""))
                    if seen[0] > self.max_body:  # chunked upload without Content-Length
                        raise BodyTooLarge(self.max_body)
                return message

            await self.app(scope, receive_limited, send_wrapper)
        finally:
            self.metrics.in_flight -= 1
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or ("unmatched" if status[0] == 404 else path if path in OPEN_PATHS else "other")
            usage = (scope.get("state") or {}).get("usage", (0, 0))
            self.metrics.record(route, status[0] or 500, elapsed, *usage)
            log.info("%s %s %d %.1fms prompt_tokens=%d completion_tokens=%d", scope.get("method"), path, status[0], elapsed * 1000, *usage)


def create_app(service: Service, api_key: str | None = None, manage_engine: bool = True, graceful_timeout: float = 30.0) -> FastAPI:
    """The HTTP app over ``service``. With ``manage_engine`` the app starts and stops the engine."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if manage_engine:
            service.engine.start()
        service.started = True
        yield
        service.stopping = True
        if manage_engine:
            await asyncio.to_thread(service.engine.stop, graceful_timeout)

    app = FastAPI(
        title="knowlm serve",
        version="1",
        description="KnowLM-compatible /generate, OpenAI-compatible completions and chat, and /extract (IE records).",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.metrics = metrics
    app.add_middleware(GuardMiddleware, api_key=api_key, max_body_bytes=service.limits.max_body_bytes, metrics=metrics)

    # -- errors -------------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(request.url.path, exc.status, exc.message)

    @app.exception_handler(BackendError)
    async def _backend_error(request: Request, exc: BackendError):
        headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
        return error_response(request.url.path, exc.status, str(exc), headers)

    @app.exception_handler(KnowlmError)
    async def _knowlm_error(request: Request, exc: KnowlmError):
        return error_response(request.url.path, 400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return error_response(request.url.path, 422, _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return error_response(request.url.path, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):  # last resort: JSON, logged, no traceback to the client
        log.exception("unhandled error on %s", request.url.path)
        return error_response(request.url.path, 500, "internal server error")

    # -- plumbing -----------------------------------------------------------------------
    async def complete(request: Request, target: Target, prompt: str, params, processors=None):
        """Submit and wait; a client that disconnects cancels the request."""
        handle = service.submit(target, prompt, params, loop=asyncio.get_running_loop(), processors=processors)
        task = asyncio.ensure_future(handle.aresult())
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=0.25)
                if done:
                    result = task.result()
                    request.state.usage = (result.prompt_tokens, result.num_tokens)
                    return result
                if await request.is_disconnected():
                    raise ApiError(499, "client closed the request")
        finally:
            if not task.done():
                handle.cancel()
                task.cancel()

    def sse(request: Request, handle: RequestHandle, chunk, final, usage_chunk) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            finished = False
            try:
                async for event in handle:
                    if event.error:
                        body = _error_body("/v1/", event.status, event.error)
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

    def openai_params(body, target: Target, max_tokens, default_max: int, template_stops: bool):
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(body, name):
                raise ApiError(400, f"{name} is not supported (only 0)")
        return service.params(
            max_tokens=max_tokens,
            default_max_tokens=default_max,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            repetition_penalty=body.repetition_penalty,
            stop=body.stop,
            seed=body.seed,
            extra_stop=service.template_stops(target) if template_stops else (),
        )

    # -- routes -------------------------------------------------------------------------
    @app.get("/health", summary="Liveness (no auth)")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/is_ready", summary="Readiness: the model is loaded and accepting requests")
    async def is_ready():
        ready = service.started and not service.stopping
        body = {"is_ready": ready, "model": service.default}
        return body if ready else JSONResponse({**body, "error": "not ready"}, status_code=503)

    @app.get("/metrics", summary="Prometheus text, or JSON with ?format=json")
    async def metrics_route(format: Literal["prometheus", "json"] = "prometheus"):
        stats = service.engine.stats()
        if format == "json":
            return metrics.snapshot(stats)
        return PlainTextResponse(metrics.prometheus(stats), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", summary="The base model and every LoRA adapter")
    async def models() -> dict:
        created = int(time.time())
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": created, "owned_by": "knowlm", "default": name == service.default}
                for name in service.model_names()
            ],
        }

    @app.post("/generate", response_model=GenerateResponse, summary="KnowLM-compatible generation")
    async def generate(body: GenerateRequest, request: Request):
        target = service.resolve(body.model)
        p = body.parameters
        params = service.params(
            max_tokens=p.max_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            top_k=p.top_k,
            num_beams=p.num_beams,
            repetition_penalty=p.repetition_penalty,
            stop=p.stop,
            seed=p.seed,
            do_sample=p.do_sample,
            extra_stop=service.template_stops(target),
        )
        prompt = service.prompt(target, body.instruction, body.input)
        result = await complete(request, target, prompt, params)
        return {"generated_text": result.text, "num_output_tokens_cf": result.num_tokens, "error": None}

    @app.post("/v1/completions", summary="OpenAI-compatible text completion (raw prompt, no template)")
    async def completions(body: CompletionRequest, request: Request):
        target = service.resolve(body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise ApiError(400, "prompt must be a string or a list with exactly one string")
        if body.echo:
            raise ApiError(400, "echo is not supported")
        from knowlm.serve.schemas import MAX_TEXT_CHARS

        if len(prompts[0]) > MAX_TEXT_CHARS:
            raise ApiError(400, f"prompt longer than {MAX_TEXT_CHARS} characters")
        params = openai_params(body, target, body.max_tokens, service.limits.completion_default_max_tokens, template_stops=False)
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
        result = await complete(request, target, prompts[0], params)
        choice = {"index": 0, "text": result.text, "logprobs": None, "finish_reason": result.finish_reason}
        return envelope(choice, usage=usage(result.prompt_tokens, result.num_tokens))

    @app.post("/v1/chat/completions", summary="OpenAI-compatible chat (prompt built with the model's template)")
    async def chat(body: ChatRequest, request: Request):
        target = service.resolve(body.model)
        if body.logprobs:
            raise ApiError(400, "logprobs is not supported")
        system, history, question = chat_to_turns(body.messages)
        prompt = service.prompt(target, question, "", system, history)
        max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        params = openai_params(body, target, max_tokens, service.limits.default_max_tokens, template_stops=True)
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
        result = await complete(request, target, prompt, params)
        message = {"role": "assistant", "content": result.text}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": result.finish_reason}
        return envelope([choice], "chat.completion", usage=usage(result.prompt_tokens, result.num_tokens))

    @app.post("/extract", summary="Knowledge extraction (NER / RE / EE) -> an IE record")
    async def extract(body: ExtractRequest, request: Request):
        from knowlm.ie.extract import extract_texts
        from knowlm.ie.schema import make_schema

        target = service.resolve(body.model)
        try:
            schema = make_schema(body.task, body.schema_)
        except KnowlmError as exc:
            raise ApiError(400, f"bad schema: {exc}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise ApiError(400, f"bad schema: {exc}") from None
        if len(schema.items) > 200:
            raise ApiError(400, "schema has more than 200 items")
        p = body.parameters
        params = None
        if p is not None:
            from knowlm.infer.decoding import preset

            base = preset("ie")
            params = service.params(
                max_tokens=p.max_tokens,
                default_max_tokens=min(base.max_new_tokens, service.limits.max_tokens),
                temperature=p.temperature,
                top_p=p.top_p,
                top_k=p.top_k,
                num_beams=p.num_beams,
                repetition_penalty=p.repetition_penalty,
                stop=p.stop,
                seed=p.seed,
                do_sample=p.do_sample,
            )
        else:
            from knowlm.infer.decoding import preset

            params = preset("ie").updated(max_new_tokens=min(preset("ie").max_new_tokens, service.limits.max_tokens))
        cancel = threading.Event()
        generator = service.generator(target, cancel)
        doc = {"text": body.text, "id": body.id} if body.id else {"text": body.text}
        work = asyncio.ensure_future(
            asyncio.to_thread(
                extract_texts, generator, [doc], body.task, schema, lang=body.lang, style=body.style,
                split_num=body.split_num, constrained=body.constrained, params=params,
            )
        )
        try:
            while True:
                done, _ = await asyncio.wait({work}, timeout=0.25)
                if done:
                    break
                if await request.is_disconnected():
                    cancel.set()
                    raise ApiError(499, "client closed the request")
            records = work.result()
        finally:
            if not work.done():
                cancel.set()
        return records[0]

    return app


def _finish(event: Event) -> str:
    return event.finish_reason if event.finish_reason in ("stop", "length") else "stop"


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(x) for x in error.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)

