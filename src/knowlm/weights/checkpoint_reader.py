"""Reading a checkpoint directory one tensor, or one slice of a tensor, at a time.

:class:`Checkpoint` opens a Hugging Face checkpoint directory: sharded or single safetensors
(``model.safetensors.index.json``), or ``pytorch_model*.bin`` (loaded with
``torch.load(weights_only=True, mmap=True)``, never a full unpickle). Safetensors are read with
positioned reads rather than a memory map: pages of a mapped file that were touched stay in the
process's resident set until it exits, so a "streaming" tool that maps its inputs still shows
the whole model in its peak RSS. Mapped ``.bin`` pages are handed back with ``madvise`` after use.
Every tensor's shape x dtype is checked against its byte range before anything is read.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import struct
from pathlib import Path

import torch

from knowlm.errors import KnowlmError
from knowlm.weights.tensor_io import INDEX_FILES, ST_DTYPES, TensorInfo, dtype_name


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


