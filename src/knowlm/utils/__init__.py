"""Small shared helpers: atomic writes, JSONL I/O, checksums."""

from knowlm.utils.atomic import atomic_dir, atomic_write
from knowlm.utils.jsonl import JsonlStats, iter_jsonl, read_jsonl, write_jsonl
from knowlm.utils.hashing import sha256_file

__all__ = ["atomic_dir", "atomic_write", "iter_jsonl", "read_jsonl", "write_jsonl", "JsonlStats", "sha256_file"]
