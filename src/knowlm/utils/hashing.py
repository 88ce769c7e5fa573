"""Checksums of files, read in chunks so large shards never sit in memory."""

from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
