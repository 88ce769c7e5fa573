"""Error answers: one JSON shape per route family, one status per kind of failure.

KnowLM routes answer ``{"error": "message"}``; OpenAI routes (``/v1/...``) answer OpenAI's
``{"error": {"message", "type", "param", "code"}}``. Whatever goes wrong, the client gets JSON and a
4xx/5xx, never a traceback: unexpected exceptions are logged here and answered with a generic 500.

Status codes, decided once (as OpenAI and vLLM do, no 422):

    400  the request is invalid: not JSON, wrong types, out-of-range values, unknown or unsupported
         options, a prompt too long, decoding parameters that give no valid distribution
    401  missing or wrong API key          404  unknown model (or route)
    405  wrong method                      413  body larger than the server accepts
    429  queue full (Retry-After)          500  generation failed inside the server (logged)
    503  not ready or shutting down (Retry-After)
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from knowlm.errors import KnowlmError
from knowlm.infer.backends import BackendError

log = logging.getLogger("knowlm.serve")


class ApiError(Exception):
    """An error answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(path: str, status: int, message: str, param: str | None = None) -> dict:
    message = message.encode("utf-8", "replace").decode("utf-8")  # never a lone surrogate in an answer
    if path.startswith("/v1/"):
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return {"error": message}


def error_response(path: str, status: int, message: str, headers: dict | None = None, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(path, status, message, param), status_code=status, headers=headers)


def describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    """One line naming the offending fields, and the first one (OpenAI's ``param``)."""
    parts, first = [], None
    for error in exc.errors()[:5]:
        where = ".".join(str(x) for x in error.get("loc", ()) if x != "body")
        first = first or where or None
        kind = error.get("type")
        if kind == "extra_forbidden":
            message = "unknown option (not supported by this server)"
        elif kind == "json_invalid":
            message = "the body is not valid JSON"
        else:
            message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "invalid request: " + "; ".join(parts), first


class ErrorMessage(BaseModel):
    error: str = Field(..., description="what was wrong")


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail


STATUS_TEXT = {
    400: "invalid request (bad JSON, types, values, unknown or unsupported options)",
    401: "missing or wrong API key",
    404: "unknown model",
    413: "request body too large",
    429: "queue full; retry after the Retry-After seconds",
    500: "generation failed inside the server",
    503: "not ready or shutting down",
}


def error_responses(*codes: int, openai: bool = False) -> dict:
    """``responses=`` for a route: the error statuses it can answer, with their JSON body."""
    model = OpenAIError if openai else ErrorMessage
    return {code: {"model": model, "description": STATUS_TEXT[code]} for code in codes}


def install_error_handlers(app: FastAPI) -> None:
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
        message, param = describe_validation(exc)
        return error_response(request.url.path, 400, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return error_response(request.url.path, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):  # last resort: JSON, logged, no traceback to the client
        log.exception("unhandled error on %s", request.url.path)
        return error_response(request.url.path, 500, "internal server error")
