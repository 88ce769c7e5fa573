"""K-quant and IQ GGUF files through llama.cpp's own quantizer (``llama_model_quantize``).

The documented llama.cpp workflow is ``convert_hf_to_gguf.py --outtype auto`` (bf16 for a bf16
model, else f16) followed by ``llama-quantize model.gguf Q4_K_M``. This does exactly that: the
intermediate file is written by :func:`.gguf_export.write_gguf` next to the output and removed
afterwards, and the quantizer is the C function ``llama-quantize`` calls, from llama-cpp-python
(which builds llama.cpp). Its per-tensor type mix (``Q4_K_M`` keeps some ``ffn_down``/``attn_v``
at Q6_K, the output tensor at Q6_K, ...) is llama.cpp's, not re-implemented here.

An importance matrix (``--imatrix``, from ``llama-imatrix``; GGUF or legacy ``.dat``) is loaded
as ``llama-quantize`` loads it and handed over through ``llama_model_imatrix_data``; the types
llama.cpp refuses to make without one (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, Q2_K_S) need it.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import struct
import time
from pathlib import Path

import numpy as np

from knowlm.errors import KnowlmError
from knowlm.utils.atomic import atomic_path
from knowlm.weights.tensor_io import DEFAULT_CHUNK_BYTES

LLAMA_CPP_TYPES = ("q2_k", "q2_k_s", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k",
                   "iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq2_m", "iq3_xxs", "iq3_xs", "iq3_s", "iq3_m",
                   "iq4_nl", "iq4_xs", "tq1_0", "tq2_0")
QUANTIZE_BUFFER_BYTES = 32 << 20  # measured: the 8 GiB default put a whole f32 copy of the embedding in memory
NEEDS_IMATRIX = ("iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "q2_k_s")


def load_llama_cpp(type: str):
    try:
        import llama_cpp
    except ImportError:
        raise KnowlmError(f"--type {type} needs llama.cpp's quantizer: pip install llama-cpp-python "
                          "(f32, f16, bf16, q8_0, q4_0, q4_1, q5_0 and q5_1 need nothing extra)") from None
    return llama_cpp


def read_imatrix(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Importance values per tensor, as ``llama-quantize`` computes them from an imatrix file."""
    path = Path(path)
    if not path.is_file():
        raise KnowlmError(f"imatrix file not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    return _read_gguf_imatrix(path) if magic == b"GGUF" else _read_legacy_imatrix(path)


def _read_gguf_imatrix(path: Path) -> dict[str, np.ndarray]:
    import gguf

    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: np.asarray(t.data, dtype=np.float32) for t in reader.tensors}
    out = {}
    for name, sums in tensors.items():
        if not name.endswith(".in_sum2"):
            continue
        base = name[: -len(".in_sum2")]
        counts = tensors.get(base + ".counts")
        if counts is None:
            raise KnowlmError(f"{path}: {base} has in_sum2 but no counts")
        sums, counts = sums.reshape(-1), counts.reshape(-1)
        per = sums.size // counts.size
        values = np.ones_like(sums)
        for j, count in enumerate(counts):
            if count > 0:
                values[j * per:(j + 1) * per] = sums[j * per:(j + 1) * per] / np.float32(count)
        out[base] = values
    if not out:
        raise KnowlmError(f"{path} holds no importance matrix (no *.in_sum2 tensors)")
    return out


def _read_legacy_imatrix(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    try:
        (n,), pos, out = struct.unpack_from("<i", data, 0), 4, {}
        for _ in range(n):
            (length,) = struct.unpack_from("<i", data, pos)
            name = data[pos + 4:pos + 4 + length].decode()
            pos += 4 + length
            ncall, nval = struct.unpack_from("<ii", data, pos)
            values = np.frombuffer(data, dtype=np.float32, count=nval, offset=pos + 8).copy()
            pos += 8 + 4 * nval
            out[name] = values / np.float32(ncall) if ncall > 0 else values
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise KnowlmError(f"{path} is not an imatrix file (GGUF or llama.cpp's legacy .dat): {exc}") from None
    return out


class _Log:
    """Collect llama.cpp's log lines while quantizing (instead of flooding stderr) to quote an error.

    llama.cpp keeps the C function pointer: the ctypes callback must outlive every later llama.cpp
    call, so one instance lives for the process, and llama-cpp-python's own logger is put back after.
    """

    _instance: "_Log | None" = None

    def __init__(self, llama_cpp):
        self.llama_cpp = llama_cpp
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self.callback = llama_cpp.llama_log_callback(lambda level, text, user_data: self.lines.append(text.decode("utf-8", "replace")))

    @classmethod
    @contextlib.contextmanager
    def capture(cls, llama_cpp):
        if cls._instance is None:
            cls._instance = cls(llama_cpp)
        log = cls._instance
        log.lines.clear()
        llama_cpp.llama_log_set(log.callback, ctypes.c_void_p(0))
        try:
            yield log
        finally:
            restore = getattr(getattr(llama_cpp, "_logger", None), "llama_log_callback", None)
            if restore is not None:
                llama_cpp.llama_log_set(restore, ctypes.c_void_p(0))

    def last_error(self) -> str:
        text = "".join(self.lines)
        errors = [line.strip() for line in text.splitlines() if "error" in line.lower() or "failed" in line.lower()]
        return errors[-1] if errors else (text.strip().splitlines() or ["no message"])[-1]


def run_quantizer(src: Path, dst: Path, type: str, imatrix: str | os.PathLike | None = None, nthread: int = 0) -> None:
    """``llama-quantize SRC DST TYPE [--imatrix FILE]`` in-process."""
    llama_cpp = load_llama_cpp(type)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{type.upper()}")
    params.nthread = nthread
    if hasattr(params, "max_buf_size"):  # rows in flight per tensor (default 8 GiB); rows quantise independently, same bytes
        params.max_buf_size = QUANTIZE_BUFFER_BYTES
    keep = []
    if imatrix is not None:
        entries = read_imatrix(imatrix)
        array = (llama_cpp.llama_model_imatrix_data * (len(entries) + 1))()
        for i, (name, values) in enumerate(entries.items()):
            values = np.ascontiguousarray(values, dtype=np.float32)
            keep += [name.encode(), values]
            array[i].name = keep[-2]
            array[i].data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            array[i].size = values.size
        array[len(entries)].name = None  # terminator
        params.imatrix = ctypes.cast(array, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        keep.append(array)
    with _Log.capture(llama_cpp) as log:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise KnowlmError(f"llama.cpp could not quantize to {type}: {log.last_error()}")


def quantize_gguf(model, output, type: str, name: str | None = None, progress: bool = False,
                  chunk_bytes: int = DEFAULT_CHUNK_BYTES, imatrix: str | os.PathLike | None = None):
    """Export ``model`` with llama.cpp's ``auto`` type next to ``output``, then quantize it to ``type``."""
    from knowlm.weights.gguf_export import GGUFSummary, write_gguf
    from knowlm.weights.checkpoint_reader import Checkpoint

    started = time.perf_counter()
    load_llama_cpp(type)  # fail before any work
    if type in NEEDS_IMATRIX and imatrix is None:
        raise KnowlmError(f"--type {type} needs an importance matrix (--imatrix FILE from llama-imatrix), as llama-quantize does")
    model, output = Path(model), Path(output)
    with Checkpoint(model) as ckpt:  # --outtype auto: bf16 if the first matrix is bf16, else f16
        first = next((i.dtype for i in ckpt.infos.values() if len(i.shape) >= 2), None)
    import torch

    base_type = "bf16" if first == torch.bfloat16 else "f16"
    intermediate = output.with_name(f".tmp-{output.name}.{os.getpid()}.{base_type}.gguf")  # removed below
    try:
        base = write_gguf(model, intermediate, base_type, name=name, progress=progress, chunk_bytes=chunk_bytes)
        with atomic_path(output) as tmp:
            run_quantizer(intermediate, tmp, type, imatrix=imatrix)
    finally:
        intermediate.unlink(missing_ok=True)
    import gguf

    mix = collections.Counter(t.tensor_type.name.lower() for t in gguf.GGUFReader(str(output)).tensors if len(t.shape) > 1)
    return GGUFSummary(str(output), type, base.tensors, output.stat().st_size,
                       sum(n for kind, n in mix.items() if kind not in ("f32", "f16", "bf16")), mix.get("f16", 0),
                       time.perf_counter() - started, base.tokenizer, dict(mix))
