"""Running the app: ``knowlm serve`` (blocking), an in-process background server, and the demo step."""

from __future__ import annotations

import ipaddress
import json
import logging
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from knowlm.errors import KnowlmError
from knowlm.serve.service import ServeLimits, Service
from knowlm.utils.atomic import atomic_write

log = logging.getLogger("knowlm.serve")


@dataclass
class ServeConfig:
    model: str
    adapters: dict[str, str] = field(default_factory=dict)  # name -> adapter directory
    host: str = "127.0.0.1"
    port: int = 8090
    api_key: str | None = None
    backend: str = "hf"  # hf | vllm
    model_name: str | None = None  # name in /v1/models (default: the model directory's name)
    template: str | None = None  # override the template from knowlm.json
    dtype: str = "auto"
    device: str = "auto"
    max_batch_size: int = 16  # 1 = no batching
    max_waiting: int = 256
    num_threads: int | None = None  # hf: intra-op threads of the engine thread
    tensor_parallel_size: int = 1  # vllm only
    gpu_memory_utilization: float = 0.9  # vllm only
    compile: bool = False  # hf only: static KV cache slots, CUDA-graph decode step on a GPU
    cache_len: int | None = None  # hf with compile: tokens of context per slot
    graceful_timeout: float = 30.0
    limits: ServeLimits = field(default_factory=ServeLimits)
    log_level: str = "info"
    cors_origins: list[str] = field(default_factory=list)  # browser origins allowed to call the API ("*": any)

    def engine_options(self):
        from knowlm.infer.backends import EngineOptions

        return EngineOptions(
            dtype=self.dtype, device=self.device, max_batch_size=self.max_batch_size, max_waiting=self.max_waiting,
            num_threads=self.num_threads, tensor_parallel_size=self.tensor_parallel_size, gpu_memory_utilization=self.gpu_memory_utilization,
            compile=self.compile, cache_len=self.cache_len,
        )


def parse_adapters(values: list[str] | None) -> dict[str, str]:
    """``["ie=out/lora", "out/other"]`` -> ``{"ie": "out/lora", "other": "out/other"}``."""
    adapters: dict[str, str] = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = Path(value.rstrip("/")).name, value
        name, path = name.strip(), path.strip()
        if not name or not path:
            raise KnowlmError(f"--adapter expects NAME=PATH or PATH, got {value!r}")
        if name in adapters:
            raise KnowlmError(f"--adapter name {name!r} given twice")
        adapters[name] = path
    return adapters


def build_engine(config: ServeConfig):
    from knowlm.infer.backends import make_backend

    return make_backend(config.backend, config.model, config.adapters, config.engine_options())


def build_service(config: ServeConfig, engine=None) -> Service:
    engine = engine or build_engine(config)
    return Service.from_engine(engine, config.model, config.model_name, config.template, config.limits)


def build_app(config: ServeConfig, engine=None):
    from knowlm.serve.app import create_app

    return create_app(build_service(config, engine), api_key=config.api_key, graceful_timeout=config.graceful_timeout, cors_origins=config.cors_origins)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _uvicorn_server(app, config: ServeConfig):
    import uvicorn

    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        access_log=False,  # our middleware logs each request with latency and tokens
        timeout_graceful_shutdown=int(config.graceful_timeout),
        limit_concurrency=max(64, config.max_waiting + config.max_batch_size + 32),
    )
    return uvicorn.Server(uv_config)


def run_server(config: ServeConfig, engine=None) -> None:
    """Serve until Ctrl-C / SIGTERM; in-flight requests get ``graceful_timeout`` s to finish."""
    if not is_loopback(config.host) and not config.api_key:
        log.warning("serving on %s without an API key: anyone who can reach this port can use the model", config.host)
    logging.basicConfig(level=getattr(logging, config.log_level.upper(), logging.INFO), format="%(asctime)s %(name)s %(message)s")
    app = build_app(config, engine)
    server = _uvicorn_server(app, config)
    # uvicorn drains, shuts down, then re-raises the signal it caught; answer it with a clean return.
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _stopped)
    try:
        server.run()
    except _Stopped:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Stopped(Exception):
    pass


def _stopped(signum, frame):
    raise _Stopped()


class BackgroundServer:
    """uvicorn in a thread on a free loopback port: ``with BackgroundServer(app) as url: ...``."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning", graceful_timeout: float = 5.0):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=int(graceful_timeout) or 1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, name="knowlm-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise KnowlmError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> str:
        self.start()
        return self.url

    def __exit__(self, *exc) -> None:
        self.stop()


def demo_stage(workdir: str | Path, model_dir: str | Path, adapter: str | None = None) -> dict:
    """The demo's serving step: start the server on a free local port, ask it one ``/generate``,
    one chat completion and one ``/extract``, stop it, and return the answers."""
    import httpx

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    adapters = {"adapter": str(adapter)} if adapter else {}
    config = ServeConfig(model=str(model_dir), adapters=adapters, max_batch_size=8, graceful_timeout=5.0, num_threads=1)
    app = build_app(config)
    started = time.perf_counter()
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        generate = client.post(
            "/generate",
            json={"instruction": "What is Zhejiang University?", "input": "", "parameters": {"max_tokens": 32}},
        )
        chat = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Where is Hangzhou?"}], "max_tokens": 32, "temperature": 0},
        )
        extract = client.post(
            "/extract",
            json={"text": "浙江大学位于杭州。", "task": "ner", "schema": ["组织机构", "地理位置"], "lang": "zh", "parameters": {"max_tokens": 64}},
        )
        models = client.get("/v1/models").json()
    for name, response in (("generate", generate), ("chat", chat), ("extract", extract)):
        if response.status_code != 200:
            raise KnowlmError(f"demo: /{name} answered {response.status_code}: {response.text[:200]}")
    summary = {
        "url": url,
        "models": [m["id"] for m in models["data"]],
        "generate": generate.json(),
        "chat": chat.json()["choices"][0]["message"]["content"],
        "chat_usage": chat.json()["usage"],
        "extract": extract.json(),
        "seconds": round(time.perf_counter() - started, 2),
    }
    with atomic_write(workdir / "serve_demo.json") as handle:
        json.dump(summary, handle, ensure_ascii=False, indent=2)
    return summary
