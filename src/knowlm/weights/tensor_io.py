"""Streaming tensor I/O shared by every weight tool: dtypes, sizes, tensor metadata, chunking.

Why not ``from_pretrained``: a 13B model is 52 GB in fp32, and KnowLM's recovery script held two
of them at once. Here a checkpoint is read one tensor -- or one slice of a tensor -- at a time and
written the same way, so peak memory is a few chunks, whatever the model size.

Reading is :class:`knowlm.weights.checkpoint_reader.Checkpoint` (safetensors by positioned reads,
``pytorch_model*.bin`` memory-mapped and weights-only); writing is
:class:`knowlm.weights.checkpoint_writer.ShardedWriter` (shards written in place, chunk by chunk).
This module holds what both sides and every tool share.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from knowlm.errors import KnowlmError

ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
DTYPE_TO_ST = {v: k for k, v in ST_DTYPES.items()}
DTYPE_NAMES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".gguf", ".ckpt", ".h5", ".msgpack")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
DEFAULT_CHUNK_BYTES = 8 << 20  # measured: 64 MiB chunks tripled peak RSS and were slower


def dtype_from_name(name: str | None) -> torch.dtype | None:
    """``"float16"`` -> ``torch.float16``; ``None`` stays ``None``; anything else is a KnowlmError."""
    if name is None:
        return None
    name = name.replace("torch.", "")
    if name not in DTYPE_NAMES:
        raise KnowlmError(f"unknown dtype {name!r}; choose one of: {', '.join(DTYPE_NAMES)}")
    return DTYPE_NAMES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def parse_size(value: str | int) -> int:
    """``"5GB"`` / ``"500MiB"`` / ``1234`` -> bytes."""
    if isinstance(value, int):
        return value
    text = value.strip().upper().replace(" ", "")
    units = {"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}
    for unit, factor in units.items():
        if text.endswith(unit):
            try:
                return int(float(text[: -len(unit)]) * factor)
            except ValueError:
                break
    try:
        return int(text)
    except ValueError:
        raise KnowlmError(f"cannot read size {value!r}; use e.g. 5GB, 500MB, 2GiB") from None


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of a tensor, without a copy when it is already contiguous."""
    flat = tensor.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    file: Path

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    @property
    def row_size(self) -> int:
        """Elements per row (the product of all dims but the first); 1 for vectors and scalars."""
        return math.prod(self.shape[1:]) if len(self.shape) > 1 else 1


def chunk_ranges(info: TensorInfo, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[tuple[int, int]]:
    """Flat element ranges ``[start, stop)`` covering a tensor, aligned to whole rows, each about
    ``chunk_bytes`` (at least one row), so row-wise math (LoRA) can work on a chunk."""
    row = info.row_size
    rows_per_chunk = max(1, chunk_bytes // max(1, row * info.dtype.itemsize))
    step = rows_per_chunk * row
    total = info.numel
    if total == 0:
        yield 0, 0
        return
    for start in range(0, total, step):
        yield start, min(total, start + step)


def read_config(directory: str | os.PathLike) -> dict:
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise KnowlmError(f"{directory} is not a Hugging Face model directory (no config.json)")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise KnowlmError(f"{path} is not valid JSON ({exc})") from None


def progress_bar(total: int, desc: str, enabled: bool = True):
    """A tqdm bar over bytes (off when disabled, and when stderr is not a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=True if not enabled else None, leave=False)
