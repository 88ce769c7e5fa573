"""``knowlm data prepare``: raw documents -> packed, tokenized, Megatron-compatible dataset.

The parent process streams the inputs as deterministic chunks of raw lines and hands them to
``workers`` processes (decode, clean, filter, dedup keys, sentence split, tokenize). Results
come back in chunk order; the parent makes the de-duplication decisions (so the first copy
always wins), packs sentences into samples and writes each chunk as a small indexed dataset,
atomically, under ``PREFIX.work/`` (:mod:`knowlm.data.chunk_writer`). When all chunks exist they
are concatenated into ``PREFIX.bin/.idx`` and the ``PREFIX.json`` sidecar is written last.

A run killed at any point resumes with the same command: finished chunks are reused (their
dedup keys reload the de-duplication state) and the result is byte-identical to an
uninterrupted run, whatever the number of workers.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import shutil
import sys
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from knowlm.data.clean import FilterConfig
from knowlm.data.chunk_writer import ChunkWriter, chunk_dir
from knowlm.data.dedup import DedupConfig
from knowlm.data.indexed import concat_shards, dtype_for_vocab
from knowlm.data.sources import Source, expand_inputs, iter_chunks
from knowlm.data.vectorized import char_table
from knowlm.data.worker import WorkerConfig, init_worker, process_chunk
from knowlm.errors import KnowlmError
from knowlm.utils.atomic import atomic_write
from knowlm.utils.hashing import sha256_file

SIDECAR_FORMAT = "knowlm-indexed-dataset/1"
PACK_MODES = ("document", "stream", "best-fit")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
)


@dataclass
class PrepareConfig:
    """Everything that decides the output (``workers`` only decides the speed).

    pack: "document" (samples never cross documents: one indexed-dataset document per input
    document, as DESIGN §3 says), "stream" (consecutive documents of a chunk share samples,
    each sample is its own indexed-dataset document: denser packing for corpora of short documents)
    or "best-fit" (the documents of a chunk, BOS/EOS as in "document", are bin-packed best-fit
    into samples, cut only at sentence boundaries: see packing.best_fit; each sample is its own
    indexed-dataset document, as Megatron does for packed data. Densest; a document's pieces may
    land in non-adjacent samples).
    min_sample_tokens: shorter samples are dropped and counted.
    """

    inputs: list[str]
    tokenizer: str
    output_prefix: str
    seq_len: int = 1024
    workers: int = 1
    json_key: str = "text"
    lang: str = "auto"
    filter: FilterConfig = field(default_factory=FilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    min_sample_tokens: int = 8
    pack: str = "document"
    pack_window: int = 16384  # best-fit: documents packed together at most (a chunk has at most chunk_docs)
    chunk_docs: int = 2000
    chunk_bytes: int = 4 << 20

    def validate(self) -> None:
        if self.seq_len < 2:
            raise KnowlmError(f"--seq-len must be at least 2, got {self.seq_len}")
        if self.workers < 1:
            raise KnowlmError(f"--workers must be at least 1, got {self.workers}")
        if self.lang not in ("auto", "zh", "en"):
            raise KnowlmError(f"--lang must be auto, zh or en, got {self.lang!r}")
        if self.pack not in PACK_MODES:
            raise KnowlmError(f"--pack must be one of {', '.join(PACK_MODES)}, got {self.pack!r}")
        if self.pack_window < 1:
            raise KnowlmError("pack_window must be at least 1")
        if self.min_sample_tokens < 0:
            raise KnowlmError("--min-sample-tokens must be >= 0")


def tokenizer_fingerprint(name: str) -> str:
    path = Path(name).expanduser()
    digest = hashlib.sha256()
    if path.is_dir():
        for fname in _TOKENIZER_FILES:
            if (path / fname).is_file():
                digest.update(fname.encode() + sha256_file(path / fname).encode())
    else:
        digest.update(name.encode())
    return digest.hexdigest()[:16]


class _Immediate:
    """Stands in for an AsyncResult when there is a single worker (no pool, no pickling)."""

    def __init__(self, value):
        self._value = value

    def get(self):
        return self._value


def _sidecar_settings(config: PrepareConfig, tokenizer, dtype) -> dict:
    return {
        "tokenizer": config.tokenizer,
        "tokenizer_class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "dtype": np.dtype(dtype).name,
        "seq_len": config.seq_len,
        "pack": config.pack,
        **({"pack_window": config.pack_window} if config.pack == "best-fit" else {}),
        "min_sample_tokens": config.min_sample_tokens,
        "json_key": config.json_key,
        "lang": config.lang,
        "filter": asdict(config.filter) | {"blocklist_size": len(config.filter.terms())}
        if config.filter.enabled
        else {"enabled": False},
        "dedup": asdict(config.dedup),
        "chunk_docs": config.chunk_docs,
        "chunk_bytes": config.chunk_bytes,
    }


def _pool_context():
    return mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def prepare(config: PrepareConfig, progress: Callable[[int, int], None] | None = None) -> dict:
    """Run the pipeline; returns the sidecar content (also written to ``PREFIX.json``)."""
    config.validate()
    from knowlm.models.loading import load_tokenizer  # here, not at import: knowlm.ie imports knowlm.data

    sources = expand_inputs(config.inputs)
    tokenizer = load_tokenizer(config.tokenizer)
    dtype = dtype_for_vocab(len(tokenizer))
    prefix = Path(config.output_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    checksums = [sha256_file(s.path) for s in sources]
    settings = _sidecar_settings(config, tokenizer, dtype)
    fingerprint = hashlib.sha256(
        json.dumps([settings, tokenizer_fingerprint(config.tokenizer), checksums, config.filter.terms()], sort_keys=True).encode()
    ).hexdigest()

    work = Path(f"{prefix}.work")
    state_file = work / "state.json"
    if work.exists():
        try:
            same = json.loads(state_file.read_text())["fingerprint"] == fingerprint
        except (OSError, ValueError, KeyError):
            same = False
        if not same:
            shutil.rmtree(work)
    if not work.exists():
        work.mkdir(parents=True)
        with atomic_write(state_file) as handle:
            json.dump({"fingerprint": fingerprint, "settings": settings}, handle)

    wconfig = WorkerConfig(
        json_key=config.json_key,
        lang=config.lang,
        filter=config.filter,
        dedup=config.dedup,
        formats=tuple(s.fmt for s in sources),
    )
    writer = ChunkWriter(config, work, dtype, tokenizer.bos_token_id, tokenizer.eos_token_id, len(sources))
    total_bytes = sum(s.size for s in sources)
    done_bytes = 0
    n_chunks = 0
    pool = None
    if config.workers > 1:
        char_table()  # forked workers inherit the character table instead of each building it
        pool = _pool_context().Pool(config.workers, initializer=init_worker, initargs=(tokenizer, wconfig, True))
    else:
        init_worker(tokenizer, wconfig)
    try:
        pending: deque = deque()  # (index, nbytes, async result or None if finished earlier)
        max_inflight = 2 * config.workers

        def finish_one() -> None:
            nonlocal done_bytes
            index, nbytes, result = pending.popleft()
            if result is None:
                writer.reload(index)
            else:
                writer.write(result.get())
            done_bytes += nbytes
            if progress:
                progress(done_bytes, total_bytes)

        for chunk in iter_chunks(sources, config.chunk_docs, config.chunk_bytes):
            n_chunks += 1
            if chunk_dir(work, chunk.index).is_dir():
                pending.append((chunk.index, chunk.nbytes_in, None))
            elif pool is not None:
                pending.append((chunk.index, chunk.nbytes_in, pool.apply_async(process_chunk, (chunk,))))
            else:
                pending.append((chunk.index, chunk.nbytes_in, _Immediate(process_chunk(chunk))))
            while pending and (pending[0][2] is None or sum(p[2] is not None for p in pending) >= max_inflight):
                finish_one()
        while pending:
            finish_one()
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()

    try:
        summary = _assemble(config, sources, checksums, settings, work, n_chunks, prefix, dtype)
    except KnowlmError:
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
    return summary


def _assemble(config, sources: list[Source], checksums, settings, work: Path, n_chunks: int, prefix: Path, dtype) -> dict:
    """Concatenate the chunks, sum their statistics, write the sidecar last."""
    n = len(sources)
    lines = np.zeros(n, dtype=np.int64)
    docs = np.zeros(n, dtype=np.int64)
    tokens = np.zeros(n, dtype=np.int64)
    seqs = np.zeros(n, dtype=np.int64)
    dropped: dict[str, np.ndarray] = {}
    short_samples = short_tokens = chars = 0
    for index in range(n_chunks):
        stats = json.loads((chunk_dir(work, index) / "stats.json").read_text(encoding="utf-8"))
        lines += stats["lines"]
        docs += stats["documents"]
        tokens += stats["tokens"]
        seqs += stats["sequences"]
        for reason, counts in stats["dropped"].items():
            dropped.setdefault(reason, np.zeros(n, dtype=np.int64))
            dropped[reason] += counts
        short_samples += stats["short_samples"]
        short_tokens += stats["short_sample_tokens"]
        chars += stats["chars"]
    if not seqs.sum():  # Megatron cannot even open an empty .bin: say so instead of writing one
        reasons = ", ".join(f"{k} {int(v.sum())}" for k, v in sorted(dropped.items())) or "no documents"
        raise KnowlmError(f"no sample left to write from {int(lines.sum())} input lines (dropped: {reasons})")
    merged = concat_shards([chunk_dir(work, i) / "data" for i in range(n_chunks)], prefix)
    n_tokens, n_seqs = int(tokens.sum()), int(merged["sequences"])
    dropped_total = {reason: int(v.sum()) for reason, v in sorted(dropped.items())}
    summary = {
        "format": SIDECAR_FORMAT,
        **settings,
        "inputs": [
            {
                "path": str(s.path),
                "name": s.name,
                "format": s.fmt,
                "bytes": s.size,
                "sha256": checksums[i],
                "lines": int(lines[i]),
                "documents": int(docs[i]),
                "sequences": int(seqs[i]),
                "tokens": int(tokens[i]),
                "dropped": {reason: int(v[i]) for reason, v in sorted(dropped.items()) if v[i]},
            }
            for i, s in enumerate(sources)
        ],
        "counts": {
            "lines": int(lines.sum()),
            "documents": int(docs.sum()),
            "dataset_documents": int(merged["documents"]),
            "sequences": n_seqs,
            "tokens": n_tokens,
            "characters": chars,
            "short_samples_dropped": short_samples,
            "short_sample_tokens_dropped": short_tokens,
        },
        "dropped": dropped_total,
        "packing_efficiency": round(n_tokens / (n_seqs * config.seq_len), 6) if n_seqs else 0.0,
    }
    with atomic_write(f"{prefix}.json") as handle:
        json.dump(summary, handle, ensure_ascii=False, indent=2)
    return summary
