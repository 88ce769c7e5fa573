"""``knowlm.json``: every output directory says what produced it.

Records the command, its arguments, the prompt template, the base model and checksums of
the weight files, so a result can be traced and verified later.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import knowlm
from knowlm.errors import KnowlmError
from knowlm.utils.atomic import atomic_write
from knowlm.utils.hashing import sha256_file

MANIFEST = "knowlm.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".ckpt", ".pth")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def weight_checksums(directory: str | os.PathLike) -> dict[str, str]:
    directory = Path(directory)
    return {
        p.name: sha256_file(p)
        for p in sorted(directory.iterdir())
        if p.is_file() and p.suffix in WEIGHT_SUFFIXES
    }


def write_manifest(
    directory: str | os.PathLike,
    produced_by: str,
    arguments: dict[str, Any] | None = None,
    template: str | None = None,
    base_model: str | None = None,
    checksums: bool = True,
    **extra: Any,
) -> dict:
    """Write ``DIR/knowlm.json`` (atomically) and return its content."""
    directory = Path(directory)
    info: dict[str, Any] = {
        "knowlm_version": knowlm.__version__,
        "produced_by": produced_by,
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0].endswith("knowlm") else None,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "arguments": _jsonable(arguments or {}),
        "template": template,
        "base_model": base_model,
    }
    info.update(_jsonable(extra))
    if checksums:
        info["checksums"] = weight_checksums(directory)
    with atomic_write(directory / MANIFEST) as handle:
        json.dump(info, handle, ensure_ascii=False, indent=2)
    return info


def update_manifest(directory: str | os.PathLike, **fields: Any) -> dict:
    """Add or replace top-level fields of ``DIR/knowlm.json`` (atomically); returns the new content."""
    directory = Path(directory)
    info = read_manifest(directory)
    info.update(_jsonable(fields))
    with atomic_write(directory / MANIFEST) as handle:
        json.dump(info, handle, ensure_ascii=False, indent=2)
    return info


def read_manifest(directory: str | os.PathLike) -> dict:
    """The manifest of a directory, or ``{}`` if it has none (e.g. a model from elsewhere).

    A manifest that exists but cannot be read is a KnowlmError naming the file: silently ignoring
    it would, e.g., prompt a llama2-tuned model with the default template.
    """
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KnowlmError(f"{path}: unreadable manifest ({str(exc).splitlines()[0]}); fix or delete it") from None
    if not isinstance(info, dict):
        raise KnowlmError(f"{path}: unreadable manifest (expected a JSON object, got {type(info).__name__}); fix or delete it")
    return info
