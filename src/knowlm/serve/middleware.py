"""The outermost ASGI layer: bearer auth, request-body limit, one log line and metrics per request.

Plain ASGI rather than FastAPI middleware so it sees every request (also 404s and streamed answers)
and can refuse an oversized or chunked body before the app reads it.
"""

from __future__ import annotations

import hmac
import logging
import time

from starlette.exceptions import HTTPException as StarletteHTTPException

from knowlm.serve.errors import error_response
from knowlm.serve.metrics import Metrics

log = logging.getLogger("knowlm.serve")
OPEN_PATHS = ("/health",)


class BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int):
        super().__init__(status_code=413, detail=f"request body exceeds {limit} bytes")


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
