"""`knowlm env`: versions and devices to paste into a bug report."""

from __future__ import annotations

import json

import typer


def env(as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Print knowlm, Python, torch, transformers, peft versions, CUDA and GPUs, and which optional extras are installed.

    Example: knowlm env
    """
    from knowlm.utils.envinfo import collect, lines

    info = collect()
    print(json.dumps(info, indent=2) if as_json else "\n".join(lines(info)))


def register(app: typer.Typer) -> None:
    app.command("env")(env)
