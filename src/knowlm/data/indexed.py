"""Megatron-compatible memory-mapped indexed dataset (``PREFIX.bin`` + ``PREFIX.idx``).

Layout of ``PREFIX.idx`` (little endian, Megatron ``MMIDIDX`` version 1)::

    9 bytes  b"MMIDIDX\\x00\\x00"
    uint64   version = 1
    uint8    dtype code (1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32, 8 uint16)
    uint64   S = number of sequences
    uint64   D = number of document indices (documents + 1)
    int32[S] sequence lengths (tokens)
    int64[S] byte offsets of each sequence in PREFIX.bin
    int64[D] document indices: sequence index where each document starts, first 0, last S

``PREFIX.bin`` is the token ids of all sequences back to back. Training memory-maps both files,
so the corpus never has to fit in RAM; Megatron's ``IndexedDataset`` reads the same files.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from knowlm.errors import KnowlmError
from knowlm.utils.atomic import current_umask, writable_parent

HEADER = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPE_CODES: dict[int, type] = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}
CODE_OF = {np.dtype(v): k for k, v in DTYPE_CODES.items()}
_PREAMBLE = len(HEADER) + 8 + 1 + 8 + 8  # 34 bytes


def dtype_for_vocab(vocab_size: int) -> type:
    """uint16 when every id fits (Megatron's rule: fewer than 65500 ids), else int32."""
    return np.uint16 if vocab_size < 65500 else np.int32


def _as_dtype(dtype) -> np.dtype:
    if isinstance(dtype, (int, np.integer)) and not isinstance(dtype, bool):
        if int(dtype) not in DTYPE_CODES:
            raise KnowlmError(f"unknown Megatron dtype code {dtype}")
        return np.dtype(DTYPE_CODES[int(dtype)])
    dt = np.dtype(dtype)
    if dt not in CODE_OF:
        raise KnowlmError(f"dtype {dt} cannot be stored in an indexed dataset")
    return dt


def bin_path(prefix: str | os.PathLike) -> Path:
    return Path(f"{prefix}.bin")


def idx_path(prefix: str | os.PathLike) -> Path:
    return Path(f"{prefix}.idx")


def write_index(handle, dtype: np.dtype, num_sequences: int, num_doc_indices: int) -> None:
    """Write the 34-byte preamble; the arrays follow."""
    handle.write(HEADER)
    handle.write(struct.pack("<Q", VERSION))
    handle.write(struct.pack("<B", CODE_OF[np.dtype(dtype)]))
    handle.write(struct.pack("<Q", num_sequences))
    handle.write(struct.pack("<Q", num_doc_indices))


def _tmp_beside(path: Path) -> Path:
    writable_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would make the dataset unreadable to other users
    return Path(tmp)


def _publish(tmp_bin: Path, tmp_idx: Path, prefix: str | os.PathLike) -> None:
    """fsync and rename both files into place (.bin first: an .idx always has its .bin)."""
    for tmp in (tmp_bin, tmp_idx):
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
    os.replace(tmp_bin, bin_path(prefix))
    os.replace(tmp_idx, idx_path(prefix))


class IndexedDatasetWriter:
    """Append documents (lists of sequences), then ``finalize()`` writes PREFIX.bin/.idx atomically.

    Tokens stream to a temp file as they come; only the per-sequence lengths stay in memory
    (4 bytes each). Use as a context manager: leaving the block finalizes, an exception discards.
    """

    def __init__(self, prefix: str | os.PathLike, dtype=np.uint16):
        self.prefix = str(prefix)
        self.dtype = _as_dtype(dtype)
        self._tmp_bin = _tmp_beside(bin_path(prefix))
        self._bin = open(self._tmp_bin, "wb")
        self._sizes: list[np.ndarray] = []
        self._docs: list[int] = [0]
        self._count = 0
        self._done = False

    def add_document(self, sequences: Sequence[Sequence[int] | np.ndarray]) -> None:
        """One document = its consecutive sequences (samples)."""
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        if len(sequences):
            flat = np.concatenate([np.asarray(s) for s in sequences]) if len(sequences) > 1 else np.asarray(sequences[0])
            self.add_flat(flat, lengths, [len(sequences)])
        else:
            self.add_flat(np.zeros(0, dtype=self.dtype), lengths, [0])

    def add_flat(self, tokens: np.ndarray, lengths: np.ndarray, doc_counts: Iterable[int]) -> None:
        """Fast path: many sequences at once (``tokens`` back to back, ``lengths`` per sequence,
        ``doc_counts`` = number of sequences of each document, in order)."""
        tokens = np.asarray(tokens)
        if tokens.size and self.dtype.kind in "iu" and tokens.dtype != self.dtype:
            info = np.iinfo(self.dtype)
            if tokens.min() < info.min or tokens.max() > info.max:
                raise ValueError(f"token ids out of the range of {self.dtype}")
        lengths = np.asarray(lengths, dtype=np.int64)
        if int(lengths.sum()) != tokens.size:
            raise ValueError("sequence lengths do not add up to the number of tokens")
        self._bin.write(tokens.astype(self.dtype, copy=False).tobytes(order="C"))
        self._sizes.append(lengths.astype(np.int32))
        for n in doc_counts:
            self._count += int(n)
            self._docs.append(self._count)

    def finalize(self) -> None:
        if self._done:
            return
        self._bin.close()
        sizes = np.concatenate(self._sizes) if self._sizes else np.zeros(0, dtype=np.int32)
        if len(sizes) != self._docs[-1]:
            self.discard()
            raise ValueError("document counts do not add up to the number of sequences")
        tmp_idx = _tmp_beside(idx_path(self.prefix))
        with open(tmp_idx, "wb") as handle:
            write_index(handle, self.dtype, len(sizes), len(self._docs))
            handle.write(sizes.astype("<i4").tobytes())
            pointers = np.zeros(len(sizes), dtype="<i8")
            if len(sizes):
                np.cumsum(sizes[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
            handle.write(pointers.tobytes())
            handle.write(np.asarray(self._docs, dtype="<i8").tobytes())
        _publish(self._tmp_bin, tmp_idx, self.prefix)
        self._done = True

    def discard(self) -> None:
        if not self._bin.closed:
            self._bin.close()
        self._tmp_bin.unlink(missing_ok=True)
        self._done = True

    def __enter__(self) -> "IndexedDatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finalize()
        else:
            self.discard()


class IndexedDataset:
    """Read-only, memory-mapped view of PREFIX.bin/.idx: ``ds[i]`` is a numpy view of sequence i."""

    def __init__(self, prefix: str | os.PathLike):
        self.prefix = str(prefix)
        ipath, bpath = idx_path(prefix), bin_path(prefix)
        for path in (ipath, bpath):
            if not path.is_file():
                raise KnowlmError(f"indexed dataset file not found: {path}")
        with open(ipath, "rb") as handle:
            pre = handle.read(_PREAMBLE)
        if len(pre) < _PREAMBLE or pre[:9] != HEADER:
            raise KnowlmError(f"{ipath} is not a Megatron MMIDIDX index")
        version, code, count, doc_count = struct.unpack("<QBQQ", pre[9:])
        if version != VERSION:
            raise KnowlmError(f"{ipath}: unsupported index version {version}")
        if code not in DTYPE_CODES:
            raise KnowlmError(f"{ipath}: unknown dtype code {code}")
        self.dtype = np.dtype(DTYPE_CODES[code])
        expected = _PREAMBLE + count * 12 + doc_count * 8
        if ipath.stat().st_size < expected:
            raise KnowlmError(f"{ipath} is truncated")
        self._idx = np.memmap(ipath, mode="r", dtype=np.uint8)
        self.sizes = np.frombuffer(self._idx, dtype="<i4", count=count, offset=_PREAMBLE)
        self.pointers = np.frombuffer(self._idx, dtype="<i8", count=count, offset=_PREAMBLE + 4 * count)
        self.document_indices = np.frombuffer(self._idx, dtype="<i8", count=doc_count, offset=_PREAMBLE + 12 * count)
        if bpath.stat().st_size:
            self._bin = np.memmap(bpath, mode="r", dtype=self.dtype)
        else:
            self._bin = np.zeros(0, dtype=self.dtype)
        if doc_count < 1 or self.document_indices[0] != 0 or self.document_indices[-1] != count:
            raise KnowlmError(f"{ipath}: document indices are inconsistent")

    def __getstate__(self) -> dict:  # DataLoader workers re-open the files instead of copying them
        return {"prefix": self.prefix}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["prefix"])

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> np.ndarray:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = int(self.pointers[i]) // self.dtype.itemsize
        return self._bin[start : start + int(self.sizes[i])]

    @property
    def num_documents(self) -> int:
        return len(self.document_indices) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.sizes.sum(dtype=np.int64))

    def document(self, j: int) -> list[np.ndarray]:
        lo, hi = int(self.document_indices[j]), int(self.document_indices[j + 1])
        return [self[i] for i in range(lo, hi)]


def concat_shards(prefixes: Sequence[str | os.PathLike], out_prefix: str | os.PathLike) -> dict:
    """Concatenate datasets of one dtype into ``out_prefix`` (streaming: flat memory).

    Byte-identical to writing all their documents through one writer, so a corpus prepared in
    chunks equals one prepared in one go.
    """
    datasets = [IndexedDataset(p) for p in prefixes]
    if not datasets:
        raise KnowlmError("nothing to merge")
    dtypes = {ds.dtype for ds in datasets}
    if len(dtypes) > 1:
        raise KnowlmError(f"cannot merge datasets of different dtypes: {sorted(str(d) for d in dtypes)}")
    dtype = datasets[0].dtype
    total_seq = sum(len(ds) for ds in datasets)
    total_docs = sum(ds.num_documents for ds in datasets)
    tmp_bin, tmp_idx = _tmp_beside(bin_path(out_prefix)), _tmp_beside(idx_path(out_prefix))
    try:
        with open(tmp_bin, "wb") as out:
            for ds in datasets:
                with open(bin_path(ds.prefix), "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        with open(tmp_idx, "wb") as out:
            write_index(out, dtype, total_seq, total_docs + 1)
            for ds in datasets:
                out.write(np.ascontiguousarray(ds.sizes).tobytes())
            offset = 0
            for ds in datasets:
                out.write((np.asarray(ds.pointers, dtype=np.int64) + offset).astype("<i8").tobytes())
                offset += int(ds.sizes.sum(dtype=np.int64)) * dtype.itemsize
            out.write(np.zeros(1, dtype="<i8").tobytes())
            base = 0
            for ds in datasets:
                out.write((np.asarray(ds.document_indices[1:], dtype=np.int64) + base).astype("<i8").tobytes())
                base += len(ds)
        _publish(tmp_bin, tmp_idx, out_prefix)
    except BaseException:
        tmp_bin.unlink(missing_ok=True)
        tmp_idx.unlink(missing_ok=True)
        raise
    finally:
        del datasets
    return {"sequences": total_seq, "documents": total_docs, "dtype": str(dtype)}


def read_sidecar(prefix: str | os.PathLike) -> dict:
    """``PREFIX.json`` written by ``knowlm data prepare`` (or ``{}`` when there is none)."""
    import json

    path = Path(f"{prefix}.json")
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return {}


def merge(prefixes: Sequence[str | os.PathLike], out_prefix: str | os.PathLike) -> dict:
    """Concatenate prepared datasets (documents kept whole, in the given order) into one.

    They must share the token dtype and, when their sidecars say so, the tokenizer. The merged
    sidecar sums the counts and lists its parts. Returns that sidecar.
    """
    import json

    from knowlm.utils.atomic import atomic_write

    if not prefixes:
        raise KnowlmError("merge needs at least one dataset prefix")
    for p in prefixes:
        for path in (idx_path(p), bin_path(p)):
            if not path.is_file():
                raise KnowlmError(f"indexed dataset file not found: {path}")
    sidecars = [read_sidecar(p) for p in prefixes]
    vocab = {(s.get("tokenizer_class"), s.get("vocab_size"), s.get("bos_token_id"), s.get("eos_token_id")) for s in sidecars if s}
    if len(vocab) > 1:
        raise KnowlmError("cannot merge datasets made with different tokenizers: " + ", ".join(sorted({str(s.get("tokenizer")) for s in sidecars if s})))
    if str(out_prefix) in {str(p) for p in prefixes}:
        raise KnowlmError("the merged output must not overwrite one of its inputs")
    result = concat_shards(prefixes, out_prefix)
    first = next((s for s in sidecars if s), {})
    seq_lens = {s.get("seq_len") for s in sidecars if s}
    parts = []
    tokens = 0
    for p, s in zip(prefixes, sidecars):
        ds = IndexedDataset(p)
        parts.append({"prefix": str(p), "sequences": len(ds), "documents": ds.num_documents, "tokens": ds.num_tokens})
        tokens += ds.num_tokens
        del ds
    seq_len = max((x for x in seq_lens if x), default=None)
    summary = {
        "format": first.get("format", "knowlm-indexed-dataset/1"),
        "merged_from": parts,
        **{k: first[k] for k in ("tokenizer", "tokenizer_class", "vocab_size", "bos_token_id", "eos_token_id") if k in first},
        "dtype": result["dtype"],
        "seq_len": seq_len,
        "counts": {"sequences": result["sequences"], "dataset_documents": result["documents"], "tokens": tokens},
        "packing_efficiency": round(tokens / (result["sequences"] * seq_len), 6) if seq_len and result["sequences"] else None,
    }
    with atomic_write(f"{out_prefix}.json") as handle:
        json.dump(summary, handle, ensure_ascii=False, indent=2)
    return summary
