"""JSON Lines reading that survives bad lines (counted, not fatal) and atomic writing."""

from __future__ import annotations

import gzip
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from knowlm.errors import KnowlmError
from knowlm.utils.atomic import atomic_write


@dataclass
class JsonlStats:
    """What a read skipped, by reason, with the first bad line numbers for the message."""

    read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    first_bad_lines: list[int] = field(default_factory=list)

    def skip(self, reason: str, lineno: int) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.first_bad_lines) < 5:
            self.first_bad_lines.append(lineno)


def open_text(path: str | os.PathLike) -> io.TextIOBase:
    """Open a text file, transparently gunzipping ``.gz``; undecodable bytes are replaced, not fatal."""
    path = Path(path)
    if not path.is_file():
        raise KnowlmError(f"input file not found: {path}")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def iter_jsonl(path: str | os.PathLike, stats: JsonlStats | None = None, strict: bool = False) -> Iterator[dict]:
    """Yield one dict per line. Malformed lines are skipped and counted in ``stats``;
    with ``strict`` the first one raises a KnowlmError naming the line."""
    for _, record in iter_jsonl_numbered(path, stats, strict):
        yield record


def iter_jsonl_numbered(path: str | os.PathLike, stats: JsonlStats | None = None, strict: bool = False) -> Iterator[tuple[int, dict]]:
    """Like :func:`iter_jsonl`, with each record's line number (to name bad lines as ``file:line``)."""
    with open_text(path) as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                if strict:
                    raise KnowlmError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
                if stats is not None:
                    stats.skip("invalid_json", lineno)
                continue
            if not isinstance(record, dict):
                if strict:
                    raise KnowlmError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
                if stats is not None:
                    stats.skip("not_an_object", lineno)
                continue
            if stats is not None:
                stats.read += 1
            yield lineno, record


def read_jsonl(path: str | os.PathLike, strict: bool = False) -> list[dict]:
    return list(iter_jsonl(path, strict=strict))


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> int:
    """Write records atomically; returns how many were written."""
    count = 0
    with atomic_write(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
