"""Operations: liveness, Prometheus metrics, the served models, the server's version."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from knowlm.serve.errors import error_responses
from knowlm.serve.routes.common import get_service
from knowlm.serve.service import Service

router = APIRouter(tags=["operations"])


@router.get("/health", summary="Liveness (no auth)")
async def health() -> dict:
    return {"status": "ok"}


@router.get("/metrics", summary="Prometheus text, or JSON with ?format=json",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}, "application/json": {}}}, **error_responses(400, 401)})
async def metrics(request: Request, format: Literal["prometheus", "json"] = "prometheus", service: Service = Depends(get_service)):
    counters = request.app.state.metrics
    stats = service.engine.stats()
    if format == "json":
        return counters.snapshot(stats)
    return PlainTextResponse(counters.prometheus(stats), media_type="text/plain; version=0.0.4")


@router.get("/v1/models", summary="The base model and every LoRA adapter", responses=error_responses(401, openai=True))
async def models(service: Service = Depends(get_service)) -> dict:
    created = int(time.time())
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "knowlm", "default": name == service.default}
            for name in service.model_names()
        ],
    }


@router.get("/version", summary="The knowlm version serving", responses=error_responses(401))
async def version() -> dict:
    from knowlm import __version__

    return {"version": __version__}
