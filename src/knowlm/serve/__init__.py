"""Serving: the HTTP API (KnowLM ``/generate``, OpenAI-compatible routes, ``/extract``) and the web UI.

    create_app(service, api_key=None)          -> FastAPI app over a backend
    ServeConfig / build_app / run_server       -> what ``knowlm serve`` does
    BackgroundServer(app)                      -> the app on a free loopback port in a thread
    demo_stage(workdir, model_dir, adapter)    -> the demo's serving step (one of each request)
"""

from knowlm.serve.server import BackgroundServer, ServeConfig, build_app, build_service, demo_stage, parse_adapters, run_server
from knowlm.serve.errors import ApiError
from knowlm.serve.service import EngineGenerator, ServeLimits, Service


def create_app(*args, **kwargs):
    from knowlm.serve.app import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ = [
    "ApiError",
    "BackgroundServer",
    "EngineGenerator",
    "ServeConfig",
    "ServeLimits",
    "Service",
    "build_app",
    "build_service",
    "create_app",
    "demo_stage",
    "parse_adapters",
    "run_server",
]
