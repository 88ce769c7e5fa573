"""KnowLM's own server: ``POST /generate`` (instruction + input, prompt built with the model's template)
and ``GET /is_ready``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from knowlm.serve.routes.common import complete, get_service
from knowlm.serve.schemas import GenerateRequest, GenerateResponse
from knowlm.serve.service import Service

router = APIRouter(tags=["KnowLM"])


@router.post("/generate", response_model=GenerateResponse, summary="KnowLM-compatible generation")
async def generate(body: GenerateRequest, request: Request, service: Service = Depends(get_service)):
    target = service.resolve(body.model)
    params = service.params(body.parameters.decoding_fields(), extra_stop=service.template_stops(target))
    prompt = service.prompt(target, body.instruction, body.input)
    result = await complete(request, service, target, prompt, params)
    return {"generated_text": result.text, "num_output_tokens_cf": result.num_tokens, "error": None}


@router.get("/is_ready", summary="Readiness: the model is loaded and accepting requests")
async def is_ready(service: Service = Depends(get_service)):
    ready = service.started and not service.stopping
    body = {"is_ready": ready, "model": service.default}
    return body if ready else JSONResponse({**body, "error": "not ready"}, status_code=503)
