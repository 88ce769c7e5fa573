"""The FastAPI app: the routers of :mod:`knowlm.serve.routes` around one :class:`Service`.

Every answer is JSON; every error is a 4xx/5xx with ``{"error": ...}`` (a string on KnowLM
routes, OpenAI's ``{"message", "type", "code"}`` object under ``/v1``; see :mod:`knowlm.serve.errors`).
Generation runs on the shared backend, so concurrent requests are batched together; a client that
disconnects cancels its request, and shutdown drains in-flight requests before failing the rest.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI

from knowlm.serve.errors import install_error_handlers
from knowlm.serve.metrics import Metrics
from knowlm.serve.middleware import GuardMiddleware
from knowlm.serve.service import Service


def create_app(service: Service, api_key: str | None = None, manage_engine: bool = True, graceful_timeout: float = 30.0) -> FastAPI:
    """The HTTP app over ``service``. With ``manage_engine`` the app starts and stops the engine."""
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
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
