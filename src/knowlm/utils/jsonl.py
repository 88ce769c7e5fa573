"""JSON Lines reading that survives bad lines (counted, not fatal) and atomic writing."""

from __future__ import annotations

import gzip
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


def not_utf8(path: str | os.PathLike, lineno: int, line: bytes, exc: UnicodeDecodeError) -> KnowlmError:
    """The one message for a file that is not UTF-8 text: where, which byte, and what to do."""
    return KnowlmError(
        f"{path}:{lineno}: not UTF-8 text (byte 0x{line[exc.start]:02x} at column {exc.start + 1}); "
        f"convert the file to UTF-8 first, e.g. iconv -f GBK -t UTF-8 IN > OUT"
    )


def _decode(path, lineno: int, line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise not_utf8(path, lineno, line, exc) from None


class StrictText:
    """A UTF-8 text file read line by line (``.gz`` gunzipped); bytes that are not UTF-8 are a
    KnowlmError naming ``file:line``, never silently replaced. A leading BOM is dropped."""

    def __init__(self, path: Path):
        self.path = path
        self._raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
        self._lineno = 0

    def __enter__(self) -> "StrictText":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._raw.close()

    def _next_line(self, raw: bytes) -> str:
        self._lineno += 1
        if self._lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if raw.endswith(b"\r\n"):  # as text mode reads Windows line ends
            raw = raw[:-2] + b"\n"
        return _decode(self.path, self._lineno, raw)

    def __iter__(self) -> Iterator[str]:
        for raw in self._raw:
            yield self._next_line(raw)

    def readline(self) -> str:
        raw = self._raw.readline()
        return self._next_line(raw) if raw else ""

    def read(self, size: int = -1) -> str:
        """The rest of the file (or about ``size`` bytes of it, whole lines)."""
        parts: list[str] = []
        total = 0
        for line in self:
            parts.append(line)
            total += len(line)
            if 0 <= size <= total:
                break
        return "".join(parts)


def open_text(path: str | os.PathLike) -> StrictText:
    """Open a UTF-8 text file for reading, transparently gunzipping ``.gz`` (see :class:`StrictText`)."""
    path = Path(path)
    if not path.is_file():
        raise KnowlmError(f"input file not found: {path}")
    return StrictText(path)


def read_text(path: str | os.PathLike) -> str:
    """The whole of a UTF-8 text file; a missing or non-UTF-8 file is a KnowlmError naming ``file:line``."""
    with open_text(path) as handle:
        return handle.read()


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
