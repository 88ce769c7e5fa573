"""vLLM's tokenizer routes: ``POST /tokenize`` (a prompt, or chat messages in the model's template) and
``POST /detokenize``, so clients can count and cut prompts with the served model's own tokenizer."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from knowlm.serve.errors import ApiError, error_responses
from knowlm.serve.openai_schemas import DetokenizeRequest, TokenizeRequest
from knowlm.serve.routes.common import get_service
from knowlm.serve.service import Service

router = APIRouter(tags=["tokenizer"])
ERRORS = error_responses(400, 401, 404, 413)


@router.post("/tokenize", summary="Token ids of a prompt (or of chat messages as the model sees them)", responses=ERRORS)
async def tokenize(body: TokenizeRequest, service: Service = Depends(get_service)) -> dict:
    target = service.resolve(body.model)
    text = body.prompt if body.prompt is not None else service.chat_prompt(target, body.messages)
    ids = service.engine.encode(text, add_special_tokens=body.add_special_tokens)
    answer = {"count": len(ids), "max_model_len": service.engine.max_context, "tokens": ids}
    if body.return_token_strs:
        answer["token_strs"] = service.engine.tokenizer.convert_ids_to_tokens(ids)
    return answer


@router.post("/detokenize", summary="The text of token ids", responses=ERRORS)
async def detokenize(body: DetokenizeRequest, service: Service = Depends(get_service)) -> dict:
    service.resolve(body.model)
    bad = [t for t in body.tokens if not 0 <= t < service.engine.vocab_size]
    if bad:
        raise ApiError(400, f"tokens: {bad[0]} is not a token id of this model (vocabulary size {service.engine.vocab_size})")
    return {"prompt": service.engine.decode(body.tokens)}
