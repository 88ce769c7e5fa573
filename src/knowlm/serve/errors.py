"""Error answers: one JSON shape per route family, one handler per kind of failure.

KnowLM routes answer ``{"error": "message"}``; OpenAI routes (``/v1/...``) answer OpenAI's
``{"error": {"message", "type", "code"}}``. Whatever goes wrong, the client gets JSON and a 4xx/5xx,
never a traceback: unexpected exceptions are logged here and answered with a generic 500.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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


def error_body(path: str, status: int, message: str) -> dict:
    if path.startswith("/v1/"):
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "code": status}}
    return {"error": message}


def error_response(path: str, status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(path, status, message), status_code=status, headers=headers)


def describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(x) for x in error.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


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
        return error_response(request.url.path, 422, describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return error_response(request.url.path, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):  # last resort: JSON, logged, no traceback to the client
        log.exception("unhandled error on %s", request.url.path)
        return error_response(request.url.path, 500, "internal server error")
