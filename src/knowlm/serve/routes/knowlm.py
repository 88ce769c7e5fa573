"""KnowLM's own server: ``POST /generate`` (instruction + input, prompt built with the model's template)
and ``GET /is_ready``. Requests shaped for KnowLM's ``inference/launch_vllm.py`` work unchanged: every
``parameters`` key it reads is honoured and unknown top-level keys are ignored, as there."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from knowlm.serve.errors import error_responses
from knowlm.serve.routes.common import complete, get_service
from knowlm.serve.schemas import GenerateRequest, GenerateResponse, KnowLMParameters
from knowlm.serve.service import Service

router = APIRouter(tags=["KnowLM"])


@router.post("/generate", response_model=GenerateResponse, summary="KnowLM-compatible generation",
             responses=error_responses(400, 401, 404, 413, 429, 500, 503))
async def generate(body: GenerateRequest, request: Request, service: Service = Depends(get_service)):
    target = service.resolve(body.model)
    parameters = body.parameters or KnowLMParameters()
    params = service.params(parameters.decoding_fields(), extra_stop=service.template_stops(target))
    prompt = service.prompt(target, body.instruction, body.input or "")
    result = await complete(request, service, target, prompt, params)
    return {"generated_text": result.text, "num_output_tokens_cf": result.num_tokens, "error": None}


@router.get("/is_ready", summary="Readiness: the model is loaded and accepting requests", responses=error_responses(401, 503))
async def is_ready(service: Service = Depends(get_service)):
    ready = service.started and not service.stopping
    body = {"is_ready": ready, "model": service.default}
    return body if ready else JSONResponse({**body, "error": "not ready"}, status_code=503)
