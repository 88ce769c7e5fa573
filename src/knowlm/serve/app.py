"""The FastAPI app: the routers of :mod:`knowlm.serve.routes` around one :class:`Service`.

Every answer is JSON (or server-sent events when streaming); every error is a 4xx/5xx with
``{"error": ...}`` (a string on KnowLM routes, OpenAI's error object under ``/v1``), with the status
codes listed in :mod:`knowlm.serve.errors` and documented per route in ``/openapi.json``.
Generation runs on the shared backend, so concurrent requests are batched together; a client that
disconnects cancels its request, and shutdown drains in-flight requests before failing the rest.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Sequence

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from knowlm.serve.errors import install_error_handlers
from knowlm.serve.metrics import Metrics
from knowlm.serve.middleware import OPEN_PATHS, GuardMiddleware
from knowlm.serve.service import Service


def create_app(service: Service, api_key: str | None = None, manage_engine: bool = True, graceful_timeout: float = 30.0,
               cors_origins: Sequence[str] = ()) -> FastAPI:
    """The HTTP app over ``service``. With ``manage_engine`` the app starts and stops the engine.
    ``cors_origins``: browser origins allowed to call the API (``["*"]`` for any), none by default."""
    from knowlm.serve.routes import ROUTERS

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
    app.state.metrics = Metrics()
    app.add_middleware(GuardMiddleware, api_key=api_key, max_body_bytes=service.limits.max_body_bytes, metrics=app.state.metrics)
    if cors_origins:  # outside the guard: preflight requests carry no API key
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"], allow_headers=["*"])
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.openapi = lambda: _openapi(app, secured=bool(api_key))
    return app


def _openapi(app: FastAPI, secured: bool) -> dict:
    """FastAPI's schema without its default 422 (this server answers 400), with bearer auth when required."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path, item in schema["paths"].items():
            for operation in item.values():
                operation.get("responses", {}).pop("422", None)
                if secured and path not in OPEN_PATHS:
                    operation["security"] = [{"bearer": []}]
        components = schema.setdefault("components", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.get("schemas", {}).pop(name, None)
        if secured:
            components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        app.openapi_schema = schema
    return app.openapi_schema
