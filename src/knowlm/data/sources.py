"""Input files: glob expansion, format detection and streaming them in deterministic chunks.

A chunk is a run of consecutive raw lines (at most ``chunk_docs`` lines or ``chunk_bytes``
bytes) cut from the concatenated inputs. Chunks depend only on the inputs, never on the number
of workers, which is what makes the output identical for any ``--workers`` and after a resume.
Lines stay bytes here: decoding (and counting invalid UTF-8) happens in the workers.
"""

from __future__ import annotations

import glob
import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from knowlm.errors import KnowlmError

JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")


@dataclass
class Source:
    path: Path
    name: str
    fmt: str  # "json" | "text"
    size: int


@dataclass
class Chunk:
    index: int
    blob: bytes  # the raw lines, each ending with b"\n"
    sources: np.ndarray  # int16 source index per line
    nbytes_in: int  # on-disk bytes consumed (for progress)


def source_format(path: Path) -> str:
    suffixes = path.suffixes
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return "json" if suffixes and suffixes[-1] in JSON_SUFFIXES else "text"


def expand_inputs(patterns: Sequence[str | os.PathLike]) -> list[Source]:
    """Paths or globs -> sources in the given order (each glob sorted); a clear error if missing."""
    if not patterns:
        raise KnowlmError("no --input given")
    paths: list[Path] = []
    for pattern in patterns:
        pattern = str(pattern)
        if any(ch in pattern for ch in "*?["):
            matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
            matches = [m for m in matches if Path(m).is_file()]
            if not matches:
                raise KnowlmError(f"no input file matches {pattern}")
            paths.extend(Path(m) for m in matches)
        else:
            path = Path(pattern).expanduser()
            if not path.is_file():
                raise KnowlmError(f"input file not found: {pattern}")
            paths.append(path)
    if len(paths) > 32000:
        raise KnowlmError("too many input files (at most 32000)")
    names = [p.name for p in paths]
    unique = len(set(names)) == len(names)
    return [
        Source(path=p, name=p.name if unique else str(p), fmt=source_format(p), size=p.stat().st_size)
        for p in paths
    ]


def _open_binary(path: Path):
    raw = open(path, "rb")
    if path.suffix == ".gz":
        return raw, gzip.GzipFile(fileobj=raw, mode="rb")
    return raw, raw


def iter_chunks(sources: Sequence[Source], chunk_docs: int = 2000, chunk_bytes: int = 4 << 20) -> Iterator[Chunk]:
    """Stream all lines of all sources as chunks (flat memory: one chunk at a time)."""
    index = 0
    lines: list[bytes] = []
    owners: list[int] = []
    size = 0
    consumed = 0
    last_pos = 0

    def flush() -> Chunk:
        nonlocal lines, owners, size, index, consumed
        chunk = Chunk(index, b"".join(lines), np.asarray(owners, dtype=np.int16), consumed)
        lines, owners, size, consumed = [], [], 0, 0
        index += 1
        return chunk

    for sid, source in enumerate(sources):
        raw, handle = _open_binary(source.path)
        last_pos = 0
        try:
            for line in handle:
                if not line.endswith(b"\n"):
                    line += b"\n"
                lines.append(line)
                owners.append(sid)
                size += len(line)
                if len(lines) >= chunk_docs or size >= chunk_bytes:
                    pos = raw.tell()
                    consumed += pos - last_pos
                    last_pos = pos
                    yield flush()
        except (OSError, EOFError) as exc:  # truncated or corrupt gzip
            raise KnowlmError(f"cannot read {source.path}: {exc}") from None
        finally:
            consumed += max(source.size - last_pos, 0)
            handle.close()
            raw.close()
    if lines:
        yield flush()
