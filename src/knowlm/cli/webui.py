"""`knowlm webui`: Gradio pages (completion, instruction, extraction) over the batching engine."""

from __future__ import annotations

from typing import List, Optional

import typer

from knowlm.cli._common import console


def webui(
    model: str = typer.Option(..., "--model", "-m", help="Local Hugging Face model directory or hub id."),
    adapter: Optional[List[str]] = typer.Option(None, help="LoRA adapter as NAME=PATH (or PATH); repeatable; pick it in the page."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (the page has no login: keep it on loopback)."),
    port: int = typer.Option(7860, help="TCP port."),
    template: Optional[str] = typer.Option(None, help="Prompt template override (default: the model's knowlm.json)."),
    max_batch_size: int = typer.Option(16, help="Requests decoded together."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for the model (default: torch's)."),
    dtype: str = typer.Option("auto", help="auto, float32, float16, bfloat16."),
    device: str = typer.Option("auto", help="auto, cpu, cuda."),
) -> None:
    """Open a web page to try a model: completion, instruction (streaming) and knowledge extraction.

    Example: knowlm webui -m demo-work/pretrain --adapter ie=demo-work/sft --port 7860
    """
    from knowlm.serve import ServeConfig, build_service, parse_adapters
    from knowlm.serve.server import is_loopback
    from knowlm.serve.webui import launch
    from knowlm.utils.net import check_port_free

    check_port_free(host, port)
    config = ServeConfig(model=model, adapters=parse_adapters(adapter), host=host, port=port, template=template,
                         max_batch_size=max_batch_size, num_threads=threads, dtype=dtype, device=device)
    with console.status(f"loading {model}"):
        service = build_service(config)
    if not is_loopback(host):
        console.print(f"[yellow]warning: the page on {host} has no login; anyone who can reach it can use the model[/yellow]")
    console.print(f"Web UI for {', '.join(service.model_names())} on http://{host}:{port} (Ctrl-C stops it).")
    try:
        launch(service, host=host, port=port, block=True)
    finally:
        service.engine.stop(timeout=5)
    console.print("Web UI stopped.")


def register(app: typer.Typer) -> None:
    app.command("webui")(webui)
