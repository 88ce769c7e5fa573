"""``POST /extract``: one text, one task, one schema -> an IE record, through the library's extraction
pipeline running on the shared engine (so extraction prompts batch with everyone else's requests)."""

from __future__ import annotations

import asyncio
import threading

from fastapi import APIRouter, Depends, Request

from knowlm.errors import KnowlmError
from knowlm.serve.errors import ApiError, error_responses
from knowlm.serve.routes.common import await_or_cancel, get_service
from knowlm.serve.schemas import MAX_SCHEMA_ITEMS, ExtractRequest
from knowlm.serve.service import Service

router = APIRouter(tags=["extraction"])


@router.post("/extract", summary="Knowledge extraction (NER, RE, EE, EET, EEA, SPO) -> an IE record",
             responses=error_responses(400, 401, 404, 413, 429, 500, 503))
async def extract(body: ExtractRequest, request: Request, service: Service = Depends(get_service)):
    from knowlm.decoding import preset
    from knowlm.ie.extract import extract_texts
    from knowlm.ie.schema import make_schema

    target = service.resolve(body.model)
    try:
        schema = make_schema(body.task, body.schema_)
    except (KnowlmError, TypeError, ValueError, AttributeError) as exc:
        raise ApiError(400, f"bad schema: {exc}") from None
    if len(schema.items) > MAX_SCHEMA_ITEMS:
        raise ApiError(400, f"schema has more than {MAX_SCHEMA_ITEMS} items")
    default_max = min(preset("ie").max_new_tokens, service.limits.max_tokens)
    if body.parameters is not None:
        params = service.params(body.parameters.decoding_fields(), default_max_tokens=default_max)
    else:
        params = preset("ie").updated(max_new_tokens=default_max)
    cancel = threading.Event()
    generator = service.generator(target, cancel)
    doc = {"text": body.text, "id": body.id} if body.id else {"text": body.text}
    work = asyncio.ensure_future(
        asyncio.to_thread(
            extract_texts, generator, [doc], body.task, schema, lang=body.lang, style=body.style,
            split_num=body.split_num, constrained=body.constrained, params=params,
        )
    )
    records = await await_or_cancel(request, work, cancel.set)
    return records[0]
