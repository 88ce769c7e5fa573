"""`knowlm bench NAME`: run one benchmark from bench/ (each prints `name: ratio` last)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from knowlm.errors import KnowlmError


def _bench_dir() -> Path:
    for base in (Path.cwd(), *Path(__file__).resolve().parents):
        if (base / "bench").is_dir() and any((base / "bench").glob("bench_*.py")):
            return base / "bench"
    raise KnowlmError("no bench/ directory found: run from a checkout of knowlm")


def bench(name: str = typer.Argument(..., help="Benchmark name, e.g. data_throughput (file bench/bench_NAME.py); 'list' lists them.")) -> None:
    """Run a benchmark: it measures knowlm's path and a baseline in the same process and prints the ratio.

    Example: knowlm bench list
    """
    directory = _bench_dir()
    available = sorted(p.stem.removeprefix("bench_") for p in directory.glob("bench_*.py"))
    if name == "list":
        print("\n".join(available))
        return
    if name not in available:
        raise KnowlmError(f"unknown benchmark {name!r}; available: {', '.join(available)}")
    raise typer.Exit(subprocess.call([sys.executable, str(directory / f"bench_{name}.py")]))


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
