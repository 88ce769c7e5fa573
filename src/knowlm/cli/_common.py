"""Helpers shared by CLI modules: consoles and parsing of small flag values."""

from __future__ import annotations

import typer
from rich.console import Console

from knowlm.errors import KnowlmError
from knowlm.utils.outputs import OVERWRITE_HELP

console = Console(soft_wrap=True)  # summaries stay one line in logs; the terminal wraps them
err_console = Console(stderr=True, soft_wrap=True)

# The same two flags on every command that writes (the policy is knowlm.utils.outputs).
OVERWRITE = typer.Option(False, "--overwrite", help=OVERWRITE_HELP)
ALLOW_EMPTY = typer.Option(False, "--allow-empty", help="Write an empty result instead of refusing an input with nothing to use.")


def parse_floats(value: str | None, flag: str) -> list[float] | None:
    """``"10,10,10"`` -> ``[10.0, 10.0, 10.0]`` with a clear error naming the flag."""
    if not value:
        return None
    try:
        return [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise KnowlmError(f"{flag} expects comma-separated numbers, got {value!r}") from None


def decoding_from_flags(
    preset_name: str,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    num_beams: int | None = None,
    repetition_penalty: float | None = None,
    do_sample: bool | None = None,
):
    """A preset with the flags the user set on top (unset flags keep the preset's value)."""
    from knowlm.decoding import preset

    return preset(preset_name).updated(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        num_beams=num_beams,
        repetition_penalty=repetition_penalty,
        do_sample=do_sample,
    )
