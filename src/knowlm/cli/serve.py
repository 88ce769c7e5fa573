"""`knowlm serve`: the HTTP API (KnowLM /generate, OpenAI-compatible routes, /extract)."""

from __future__ import annotations

from typing import List, Optional

import typer

from knowlm.cli._common import console


def serve(
    model: str = typer.Option(..., "--model", "-m", help="Local Hugging Face model directory or hub id."),
    adapter: Optional[List[str]] = typer.Option(None, help="LoRA adapter as NAME=PATH (or PATH); repeatable. Requests pick one with their 'model' field."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind. Anything but loopback exposes the model: set --api-key."),
    port: int = typer.Option(8090, help="TCP port."),
    api_key: Optional[str] = typer.Option(None, envvar="KNOWLM_API_KEY", help="Require 'Authorization: Bearer KEY' on every route but /health (env KNOWLM_API_KEY)."),
    backend: str = typer.Option("hf", help="hf (batched Hugging Face engine, CPU or GPU) or vllm (GPU, needs the gpu extra)."),
    model_name: Optional[str] = typer.Option(None, help="Name of the base model in /v1/models (default: its directory name)."),
    template: Optional[str] = typer.Option(None, help="Prompt template override (default: the model's knowlm.json)."),
    max_batch_size: int = typer.Option(16, help="Requests decoded together; 1 disables batching."),
    max_queue: int = typer.Option(256, help="Requests allowed to wait for a slot before the server answers 429."),
    max_tokens: int = typer.Option(2048, help="Largest max_tokens a request may ask for."),
    max_prompt_tokens: Optional[int] = typer.Option(None, help="Longest prompt accepted, in tokens (default: the model's context)."),
    max_body_bytes: int = typer.Option(1_000_000, help="Largest request body accepted (413 beyond)."),
    tensor_parallel_size: int = typer.Option(1, help="vllm: GPUs to shard the model over."),
    gpu_memory_utilization: float = typer.Option(0.9, help="vllm: fraction of GPU memory to use."),
    threads: Optional[int] = typer.Option(None, help="hf: CPU threads for the model (default: torch's; 1 suits small models)."),
    compile: bool = typer.Option(False, "--compile", help="hf: static KV cache of --max-batch-size slots; on a GPU the decode step runs as a CUDA graph (compiled at start)."),
    cache_len: Optional[int] = typer.Option(None, help="hf with --compile: tokens of context per slot (default: the model's); KV memory is slots x this."),
    dtype: str = typer.Option("auto", help="auto, float32, float16, bfloat16."),
    device: str = typer.Option("auto", help="auto, cpu, cuda (hf backend)."),
    graceful_timeout: float = typer.Option(30.0, help="Seconds in-flight requests get to finish on shutdown."),
    log_level: str = typer.Option("info", help="debug, info, warning, error."),
    cors_origin: Optional[List[str]] = typer.Option(None, help="Let web pages from this origin call the API (CORS), e.g. http://localhost:3000; repeatable; '*' for any."),
) -> None:
    """Serve a model over HTTP: POST /generate (KnowLM), /v1/completions, /v1/chat/completions (OpenAI, streaming), /extract.

    Concurrent requests share forward passes (continuous batching); /metrics shows queue depth and tokens/s.

    Example: knowlm serve -m demo-work/pretrain --adapter ie=demo-work/sft --port 8090 --api-key secret
    """
    from knowlm.errors import KnowlmError
    from knowlm.serve import ServeConfig, ServeLimits, parse_adapters, run_server
    from knowlm.serve.server import build_engine, is_loopback

    from knowlm.utils.net import check_api_key, check_port_free

    api_key = check_api_key(api_key)
    check_port_free(host, port)
    for flag, value in (("--max-batch-size", max_batch_size), ("--max-queue", max_queue), ("--max-tokens", max_tokens), ("--max-body-bytes", max_body_bytes)):
        if value < 1:
            raise KnowlmError(f"{flag} must be >= 1")
    limits = ServeLimits(max_body_bytes=max_body_bytes, max_prompt_tokens=max_prompt_tokens, max_tokens=max_tokens)
    config = ServeConfig(
        model=model, adapters=parse_adapters(adapter), host=host, port=port, api_key=api_key or None, backend=backend,
        model_name=model_name, template=template, dtype=dtype, device=device, max_batch_size=max_batch_size,
        max_waiting=max_queue, num_threads=threads, tensor_parallel_size=tensor_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
        graceful_timeout=graceful_timeout, limits=limits, log_level=log_level, cors_origins=list(cors_origin or []), compile=compile,
        cache_len=cache_len,
    )
    with console.status(f"loading {model} ({backend} backend)"):
        engine = build_engine(config)
    names = [model_name or model.rstrip("/").split("/")[-1], *config.adapters]
    console.print(
        f"Serving {', '.join(names)} on http://{host}:{port} (batch {max_batch_size}, queue {max_queue}, "
        f"auth {'on' if config.api_key else 'off'}); routes: /generate /v1/completions /v1/chat/completions /extract "
        f"/tokenize /v1/models /metrics /health /version. Ctrl-C stops it after in-flight requests finish."
    )
    if not is_loopback(host) and not config.api_key:
        console.print(f"[yellow]warning: {host} is reachable from other machines and no --api-key is set[/yellow]")
    run_server(config, engine)
    console.print("Server stopped.")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
