"""Streaming tensor I/O shared by every weight tool.

Why not ``from_pretrained``: a 13B model is 52 GB in fp32, and KnowLM's recovery script held two
of them at once. Here a checkpoint is read one tensor -- or one slice of a tensor -- at a time and
written the same way, so peak memory is a few chunks, whatever the model size.

Reading
    :class:`Checkpoint` opens a Hugging Face checkpoint directory: sharded or single safetensors
    (``model.safetensors.index.json``), or ``pytorch_model*.bin`` (loaded with
    ``torch.load(weights_only=True, mmap=True)``, never a full unpickle). Safetensors are read with
    positioned reads rather than a memory map: pages of a mapped file that were touched stay in the
    process's resident set until it exits, so a "streaming" tool that maps its inputs still shows
    the whole model in its peak RSS. Mapped ``.bin`` pages are handed back with ``madvise`` after use.

Writing
    :class:`ShardedWriter` writes ``model-0000i-of-0000N.safetensors`` plus
    ``model.safetensors.index.json`` (or a single ``model.safetensors``) chunk by chunk. Each shard
    reserves room for its JSON header up front (padded with spaces, which the format allows), so
    tensor bytes go straight to their final place and nothing is buffered or copied afterwards.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import shutil
import struct
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


def check_byte_range(path: Path, name: str, shape, dtype: torch.dtype, nbytes: int, exact: bool = True) -> None:
    """Refuse a tensor whose shape x dtype size does not fill its byte range (``exact``) or does not fit in it.

    A header that promises more elements than its bytes hold would otherwise be read as garbage
    (or as bytes of the next tensor); safetensors itself refuses such files, and so does every reader here.
    """
    need = math.prod(shape) * dtype.itemsize
    if need != nbytes if exact else need > nbytes:
        raise KnowlmError(
            f"{path}: tensor {name} declares shape {list(shape)} of {dtype_name(dtype)} ({need} bytes) but its byte range "
            f"holds {nbytes} bytes: the file is damaged or was edited; re-download or re-export it"
        )


def _pickle_refusal(path: Path, exc: BaseException) -> KnowlmError:
    """The message for a torch file that a weights-only load refuses (never echo torch's ``weights_only=False`` hint)."""
    text = str(exc)
    detail = next((line.strip() for line in text.splitlines() if "GLOBAL" in line or "Unsupported" in line), "")
    if "Weights only load failed" in text or detail:
        why = f" ({detail})" if detail else ""
        return KnowlmError(f"{path} is not a safetensors/weights-only file; convert it with a trusted tool{why}")
    return KnowlmError(f"cannot read {path} as a weights-only torch checkpoint: {text.splitlines()[0] if text else type(exc).__name__}")


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


def _release_pages(tensor: torch.Tensor) -> None:
    """Tell the kernel we are done with the mapped pages behind ``tensor`` (Linux; best effort)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        page = os.sysconf("SC_PAGE_SIZE")
        start = tensor.data_ptr()
        end = start + tensor.numel() * tensor.element_size()
        aligned = start - start % page
        libc.madvise(ctypes.c_void_p(aligned), ctypes.c_size_t(end - aligned), 4)  # MADV_DONTNEED
    except (OSError, AttributeError, ValueError):
        pass


class _SafetensorsFile:
    def __init__(self, path: Path):
        self.path = path
        try:
            self.handle = open(path, "rb")
            (length,) = struct.unpack("<Q", self.handle.read(8))
            if length > 100 << 20:
                raise ValueError("header too large")
            header = json.loads(self.handle.read(length))
        except (OSError, ValueError, struct.error) as exc:
            raise KnowlmError(f"{path} is not a readable safetensors file ({exc})") from None
        self.data_start = 8 + length
        self.meta = header.pop("__metadata__", None) or {}
        self.entries = header
        self._validate(path.stat().st_size - self.data_start)

    def _validate(self, data_size: int) -> None:
        """safetensors' own rules: known dtype, shape x dtype size == byte range, ranges back to back, no tail."""
        path, end = self.path, 0
        try:
            ranges = sorted((int(e["data_offsets"][0]), int(e["data_offsets"][1]), n) for n, e in self.entries.items())
        except (KeyError, TypeError, ValueError, IndexError):
            raise KnowlmError(f"{path} is not a readable safetensors file (a header entry lacks data_offsets)") from None
        for begin, stop, name in ranges:
            entry = self.entries[name]
            if entry.get("dtype") not in ST_DTYPES:
                raise KnowlmError(f"{path}: tensor {name} has unsupported dtype {entry.get('dtype')}")
            if stop > data_size:
                raise KnowlmError(f"{path} is truncated (tensor {name} runs past the end of the file)")
            if begin != end or stop < begin:
                raise KnowlmError(f"{path}: tensor {name} starts at byte {begin} of the data, expected {end}: "
                                  "overlapping or gapped byte ranges; the file is damaged")
            check_byte_range(path, name, entry.get("shape", []), ST_DTYPES[entry["dtype"]], stop - begin)
            end = stop
        if end != data_size:
            raise KnowlmError(f"{path} has {data_size - end} bytes after its last tensor: damaged or not a safetensors file")

    def info(self, name: str) -> TensorInfo:
        entry = self.entries[name]
        return TensorInfo(name, tuple(entry["shape"]), ST_DTYPES[entry["dtype"]], self.path)

    def read(self, name: str, start: int, stop: int) -> torch.Tensor:
        entry = self.entries[name]
        dtype = ST_DTYPES[entry["dtype"]]
        count = stop - start
        out = torch.empty(count, dtype=dtype)
        view = memoryview(out.view(torch.uint8).numpy()).cast("B") if count else memoryview(b"")
        offset = self.data_start + entry["data_offsets"][0] + start * dtype.itemsize
        done = 0
        while done < len(view):
            n = os.preadv(self.handle.fileno(), [view[done:]], offset + done)
            if n <= 0:
                raise KnowlmError(f"{self.path} is truncated while reading {name}")
            done += n
        return out

    def close(self) -> None:
        self.handle.close()


class _TorchFile:
    """A ``torch.save`` file (``pytorch_model*.bin``, ``consolidated.*.pth``), memory-mapped."""

    def __init__(self, path: Path):
        self.path = path
        self.mapped = True
        try:
            self.state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            # legacy (pre-zip) serialization cannot be mapped: load it whole, still without unpickling code
            self.mapped = False
            self.state = self._load_plain(path)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad input file
            raise _pickle_refusal(path, exc) from None
        if isinstance(self.state, dict) and "state_dict" in self.state and isinstance(self.state["state_dict"], dict):
            self.state = self.state["state_dict"]
        if not isinstance(self.state, dict):
            raise KnowlmError(f"{path} does not hold a state dict")
        self.state = {k: v for k, v in self.state.items() if isinstance(v, torch.Tensor)}
        for name, t in self.state.items():
            storage_bytes = t.untyped_storage().nbytes() - t.storage_offset() * t.element_size()
            check_byte_range(path, name, t.shape, t.dtype, storage_bytes, exact=False)

    @staticmethod
    def _load_plain(path: Path):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise _pickle_refusal(path, exc) from None

    def info(self, name: str) -> TensorInfo:
        t = self.state[name]
        return TensorInfo(name, tuple(t.shape), t.dtype, self.path)

    def read(self, name: str, start: int, stop: int) -> torch.Tensor:
        src = self.state[name]
        flat = src.reshape(-1)[start:stop]
        out = flat.clone()
        if self.mapped and src.is_contiguous():
            _release_pages(flat)
        return out

    def close(self) -> None:
        self.state = {}


class Checkpoint:
    """Tensor names, shapes and dtypes of a checkpoint directory, and reads of any slice of one.

    ``files`` overrides discovery (e.g. Meta's ``consolidated.*.pth``). Nothing is loaded up front
    beyond safetensors headers and (mapped) ``.bin`` indexes.
    """

    def __init__(self, path: str | os.PathLike, files: list[Path] | None = None):
        self.path = Path(path)
        if files is None:
            files = discover_weight_files(self.path)
        self._files: dict[Path, _SafetensorsFile | _TorchFile] = {}
        self.infos: dict[str, TensorInfo] = {}
        for file in files:
            reader = _SafetensorsFile(file) if file.suffix == ".safetensors" else _TorchFile(file)
            self._files[file] = reader
            names = reader.entries if isinstance(reader, _SafetensorsFile) else reader.state
            for name in names:
                if name in self.infos:
                    raise KnowlmError(f"tensor {name} appears in two files: {self.infos[name].file.name} and {file.name}")
                self.infos[name] = reader.info(name)
        if not self.infos:
            raise KnowlmError(f"no tensors found in {self.path}")

    def __contains__(self, name: str) -> bool:
        return name in self.infos

    def __len__(self) -> int:
        return len(self.infos)

    def names(self) -> list[str]:
        return list(self.infos)

    def info(self, name: str) -> TensorInfo:
        try:
            return self.infos[name]
        except KeyError:
            raise KnowlmError(f"tensor {name} not found in {self.path}") from None

    @property
    def files(self) -> list[Path]:
        return list(self._files)

    @property
    def total_bytes(self) -> int:
        return sum(i.nbytes for i in self.infos.values())

    def read(self, name: str, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Elements ``[start, stop)`` of the flattened tensor, as a new 1-D tensor."""
        info = self.info(name)
        stop = info.numel if stop is None else stop
        return self._files[info.file].read(name, start, stop)

    def tensor(self, name: str) -> torch.Tensor:
        """The whole tensor, shaped."""
        return self.read(name).reshape(self.info(name).shape)

    def close(self) -> None:
        for reader in self._files.values():
            reader.close()

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def discover_weight_files(path: Path) -> list[Path]:
    """The weight files of a HF checkpoint directory, preferring safetensors, in index order."""
    if not path.is_dir():
        raise KnowlmError(f"model directory not found: {path}")
    for index_name in INDEX_FILES:
        index = path / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as exc:
                raise KnowlmError(f"{index} is not a valid index file ({exc})") from None
            files = list(dict.fromkeys(weight_map.values()))
            missing = [f for f in files if not (path / f).is_file()]
            if missing:
                raise KnowlmError(f"{path}: shard {missing[0]} listed in {index_name} is missing")
            return [path / f for f in files]
    found = sorted(p for p in path.glob("*.safetensors") if not p.name.startswith(("adapter_", ".")))
    if found:
        return found
    found = sorted(p for p in path.glob("*.bin") if p.name.startswith("pytorch_model"))
    if found:
        return found
    found = sorted(p for p in path.glob("*.bin") if not p.name.startswith(("adapter_", "training_args", ".")))
    if found:
        return found
    raise KnowlmError(f"no weights in {path}: expected *.safetensors or pytorch_model*.bin")


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
