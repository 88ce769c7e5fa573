"""Writing a checkpoint directory chunk by chunk: safetensors shards, their index, the side files.

:class:`ShardedWriter` writes ``model-0000i-of-0000N.safetensors`` plus
``model.safetensors.index.json`` (or a single ``model.safetensors``). Each shard reserves room for
its JSON header up front (padded with spaces, which the format allows), so tensor bytes go straight
to their final place and nothing is buffered or copied afterwards.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
from pathlib import Path

import torch

from knowlm.errors import KnowlmError
from knowlm.weights.tensor_io import DTYPE_TO_ST, INDEX_FILES, WEIGHT_SUFFIXES, dtype_name, parse_size, tensor_bytes


class ShardedWriter:
    """Write tensors chunk by chunk into safetensors shards under ``out_dir``.

    Use ``begin(name, shape, dtype)``, then ``write(chunk)`` until the tensor is complete, or
    ``add(name, tensor)``; ``close()`` names the shards and writes the index. ``out_dir`` should
    be a temporary directory (see :func:`knowlm.utils.atomic_dir`).
    """

    def __init__(self, out_dir: str | os.PathLike, max_shard_size: int | str = "5GB", header_reserve: int = 128 << 10):
        self.out_dir = Path(out_dir)
        self.max_shard_bytes = parse_size(max_shard_size)
        self.header_reserve = header_reserve
        self.shards: list[dict] = []  # {"path", "entries", "size", "header_len"}
        self.weight_map: dict[str, int] = {}
        self.total_size = 0
        self._handle = None
        self._current: dict | None = None  # tensor being written
        self.closed = False

    # -- shard bookkeeping -------------------------------------------------------------
    def _open_shard(self) -> None:
        self._finish_shard()
        path = self.out_dir / f".shard-{len(self.shards) + 1:05d}.safetensors"
        self._handle = open(path, "wb")
        self.shards.append({"path": path, "entries": {}, "size": 0, "header_len": 2 + len('"__metadata__":{"format":"pt"},')})

    def _finish_shard(self) -> None:
        if self._handle is None:
            return
        shard = self.shards[-1]
        header = {"__metadata__": {"format": "pt"}, **shard["entries"]}
        blob = json.dumps(header, separators=(",", ":")).encode()
        if len(blob) > self.header_reserve:  # pragma: no cover - guarded by _entry_len estimates
            raise RuntimeError("safetensors header outgrew its reserved space")
        blob += b" " * (self.header_reserve - len(blob))
        self._handle.seek(0)
        self._handle.write(struct.pack("<Q", len(blob)))
        self._handle.write(blob)
        self._handle.close()
        self._handle = None

    @staticmethod
    def _entry_len(name: str, shape, dtype: torch.dtype, offsets) -> int:
        entry = {name: {"dtype": DTYPE_TO_ST[dtype], "shape": list(shape), "data_offsets": list(offsets)}}
        return len(json.dumps(entry, separators=(",", ":"))) + 1

    # -- writing -------------------------------------------------------------------------
    def begin(self, name: str, shape, dtype: torch.dtype) -> None:
        if self._current is not None:
            raise RuntimeError(f"tensor {self._current['name']} is not complete")
        if name in self.weight_map:
            raise ValueError(f"duplicate tensor {name}")
        if dtype not in DTYPE_TO_ST:
            raise KnowlmError(f"cannot store dtype {dtype} in safetensors")
        shape = tuple(int(d) for d in shape)
        nbytes = math.prod(shape) * dtype.itemsize
        shard = self.shards[-1] if self.shards else None
        worst_offsets = (10**15, 10**15)
        entry_len = self._entry_len(name, shape, dtype, worst_offsets)
        if (
            shard is None
            or (shard["entries"] and shard["size"] + nbytes > self.max_shard_bytes)
            or shard["header_len"] + entry_len + 8 > self.header_reserve
        ):
            self._open_shard()
            shard = self.shards[-1]
            if shard["header_len"] + entry_len + 8 > self.header_reserve:
                raise KnowlmError(f"tensor name too long for a safetensors header: {name[:80]}...")
        start = shard["size"]
        shard["entries"][name] = {"dtype": DTYPE_TO_ST[dtype], "shape": list(shape), "data_offsets": [start, start + nbytes]}
        shard["header_len"] += entry_len
        shard["size"] += nbytes
        self.weight_map[name] = len(self.shards) - 1
        self.total_size += nbytes
        self._handle.seek(8 + self.header_reserve + start)
        self._current = {"name": name, "dtype": dtype, "left": nbytes}
        if nbytes == 0:
            self._current = None

    def write(self, chunk: torch.Tensor) -> None:
        current = self._current
        if current is None:
            raise RuntimeError("write() without begin()")
        if chunk.dtype != current["dtype"]:
            chunk = chunk.to(current["dtype"])
        data = tensor_bytes(chunk)
        if len(data) > current["left"]:
            raise RuntimeError(f"too much data for tensor {current['name']}")
        self._handle.write(data)
        current["left"] -= len(data)
        if current["left"] == 0:
            self._current = None

    def add(self, name: str, tensor: torch.Tensor) -> None:
        self.begin(name, tensor.shape, tensor.dtype)
        if tensor.numel():
            self.write(tensor)

    def close(self) -> list[Path]:
        """Finish the last shard, give shards their final names, write the index; returns the files."""
        if self._current is not None:
            raise RuntimeError(f"tensor {self._current['name']} is incomplete ({self._current['left']} bytes missing)")
        if not self.shards:
            raise KnowlmError("no tensors to write")
        self._finish_shard()
        n = len(self.shards)
        names = ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        for shard, name in zip(self.shards, names):
            os.replace(shard["path"], self.out_dir / name)
        if n > 1:
            index = {
                "metadata": {"total_size": self.total_size},
                "weight_map": {t: names[i] for t, i in sorted(self.weight_map.items())},
            }
            (self.out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        self.closed = True
        return [self.out_dir / name for name in names]

    def abort(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def copy_side_files(src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool = True) -> list[str]:
    """Copy config, generation config, tokenizer and other small non-weight files; returns their names."""
    src, dst = Path(src), Path(dst)
    copied = []
    for item in sorted(src.iterdir()):
        if not item.is_file() or item.name.startswith("."):
            continue
        if item.suffix in WEIGHT_SUFFIXES or item.name in INDEX_FILES or item.name == "knowlm.json":
            continue
        if item.name.startswith(("adapter_", "training_args")) or item.stat().st_size > 64 << 20:
            continue
        target = dst / item.name
        if target.exists() and not overwrite:
            continue
        shutil.copy2(item, target)
        copied.append(item.name)
    return copied


def set_config_dtype(directory: str | os.PathLike, dtype: torch.dtype) -> None:
    """Record the weights' dtype in ``config.json`` (``dtype``; also ``torch_dtype`` if present)."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text())
    config["dtype"] = dtype_name(dtype)
    if "torch_dtype" in config:
        config["torch_dtype"] = dtype_name(dtype)
    path.write_text(json.dumps(config, indent=2) + "\n")


