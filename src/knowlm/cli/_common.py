"""Helpers shared by CLI modules: consoles and parsing of small flag values."""

from __future__ import annotations

from rich.console import Console

from knowlm.errors import KnowlmError

console = Console()
err_console = Console(stderr=True)


def parse_floats(value: str | None, flag: str) -> list[float] | None:
    """``"10,10,10"`` -> ``[10.0, 10.0, 10.0]`` with a clear error naming the flag."""
    if not value:
        return None
    try:
        return [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise KnowlmError(f"{flag} expects comma-separated numbers, got {value!r}") from None
