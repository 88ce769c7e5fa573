"""``knowlm data prepare``: raw documents -> packed, tokenized, Megatron-compatible dataset.

The parent process streams the inputs as deterministic chunks of raw lines and hands them to
``workers`` processes (decode, clean, filter, dedup keys, sentence split, tokenize). Results
come back in chunk order; the parent makes the de-duplication decisions (so the first copy
always wins), packs sentences into samples and writes each chunk as a small indexed dataset,
atomically, under ``PREFIX.work/``. When all chunks exist they are concatenated into
``PREFIX.bin/.idx`` and the ``PREFIX.json`` sidecar is written last.

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
from knowlm.data.dedup import DedupConfig, Deduplicator
from knowlm.data.indexed import IndexedDatasetWriter, concat_shards, dtype_for_vocab
from knowlm.data.packing import best_fit, pack_lengths, with_special_tokens
from knowlm.data.sources import Source, expand_inputs, iter_chunks
from knowlm.data.vectorized import char_table
from knowlm.data.worker import ChunkResult, WorkerConfig, init_worker, process_chunk
from knowlm.errors import KnowlmError
from knowlm.utils.atomic import atomic_dir, atomic_write
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


def _chunk_dir(work: Path, index: int) -> Path:
    return work / f"chunk-{index:06d}"


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


class _ChunkWriter:
    """Parent-side, in corpus order: dedup decisions, packing, writing one chunk atomically."""

    def __init__(self, config: PrepareConfig, work: Path, dtype, bos: int | None, eos: int | None, n_sources: int):
        self.config, self.work, self.dtype = config, work, dtype
        self.bos, self.eos, self.n_sources = bos, eos, n_sources
        self.dedup = Deduplicator(config.dedup)

    def reload(self, index: int) -> None:
        """A chunk finished by an earlier run: only its dedup keys matter now."""
        path = _chunk_dir(self.work, index) / "keys.npy"
        if self.config.dedup.mode != "none":
            for key in np.load(path):
                self.dedup.add(key)

    def write(self, res: ChunkResult) -> None:
        cfg = self.config
        n_docs = len(res.doc_tokens)
        sent_end = np.cumsum(res.doc_sents)
        dropped = {k: v.copy() for k, v in res.dropped.items()}
        kept, kept_keys = [], []
        for i in range(n_docs):
            if res.keys is not None and self.dedup.is_duplicate(res.keys[i]):
                dropped.setdefault("duplicate", np.zeros(self.n_sources, dtype=np.int64))[res.doc_sources[i]] += 1
                continue
            kept.append(i)
            if res.keys is not None:
                kept_keys.append(res.keys[i])

        # The kept documents' token stream, BOS/EOS around each, built with array writes.
        kept_arr = np.asarray(kept, dtype=np.int64)
        has_bos, has_eos = self.bos is not None, self.eos is not None
        doc_stream_lens = res.doc_tokens[kept_arr].astype(np.int64) + int(has_bos) + int(has_eos)
        first = np.cumsum(doc_stream_lens) - doc_stream_lens
        stream = np.empty(int(doc_stream_lens.sum()), dtype=np.int32)
        is_text = np.ones(len(stream), dtype=bool)
        if has_bos:
            stream[first] = self.bos
            is_text[first] = False
        if has_eos:
            stream[first + doc_stream_lens - 1] = self.eos
            is_text[first + doc_stream_lens - 1] = False
        kept_mask = np.zeros(n_docs, dtype=bool)
        kept_mask[kept_arr] = True
        stream[is_text] = res.tokens[np.repeat(kept_mask, res.doc_tokens)]

        def sentences(j: int) -> list[int]:
            """Sentence lengths of the j-th kept document, BOS/EOS included."""
            i = kept[j]
            s0 = int(sent_end[i] - res.doc_sents[i])
            return with_special_tokens(res.sent_lens[s0 : int(sent_end[i])].tolist(), has_bos, has_eos)

        sample_lens, doc_counts = [], []
        stream_sentences: list[int] = []
        doc_sentences: list[list[int]] = []
        if cfg.pack == "stream":
            for j in range(len(kept)):
                stream_sentences += sentences(j)
        elif cfg.pack == "best-fit":
            doc_sentences = [sentences(j) for j in range(len(kept))]
        else:  # a document that fits one sample needs no sentence lengths
            for j, n in enumerate(doc_stream_lens.tolist()):
                samples = pack_lengths(sentences(j), cfg.seq_len) if n > cfg.seq_len else ([n] if n else [])
                sample_lens += samples
                doc_counts.append(len(samples))
        perm = None  # token order of the samples, as indices into ``stream`` (None: stream order)
        if cfg.pack == "stream":
            sample_lens = pack_lengths(stream_sentences, cfg.seq_len)
            doc_counts = [1] * len(sample_lens)
        elif cfg.pack == "best-fit":
            doc_start = np.concatenate([[0], np.cumsum(doc_stream_lens)[:-1]]).astype(np.int64) if kept else np.zeros(0, np.int64)
            spans = []  # (start in the stream, tokens) of every piece, in sample order
            sample_lens = []
            for lo in range(0, len(doc_sentences), cfg.pack_window):  # bounded work and memory per window
                for sample in best_fit(doc_sentences[lo : lo + cfg.pack_window], cfg.seq_len):
                    spans += [(int(doc_start[lo + d]) + off, n) for d, off, n in sample]
                    sample_lens.append(sum(n for _, _, n in sample))
            doc_counts = [1] * len(sample_lens)
            span = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
            out_start = np.concatenate([[0], np.cumsum(span[:, 1])[:-1]]) if len(span) else span[:, 0]
            perm = np.repeat(span[:, 0] - out_start, span[:, 1]) + np.arange(int(span[:, 1].sum()))

        lengths = np.asarray(sample_lens, dtype=np.int64)
        keep = lengths >= max(cfg.min_sample_tokens, 1)
        token_keep = np.repeat(keep, lengths)  # in sample order
        doc_of_token = np.repeat(np.arange(len(kept)), np.asarray(doc_stream_lens, dtype=np.int64))
        sample_start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else lengths
        if perm is not None:
            stream = stream[perm]
            stream_keep = np.zeros(len(perm), dtype=bool)
            stream_keep[perm] = token_keep
            sample_first = perm[sample_start] if len(sample_start) else sample_start
        else:
            stream_keep, sample_first = token_keep, sample_start
        kept_sources = res.doc_sources[kept] if kept else np.zeros(0, dtype=np.int16)
        tokens_per_doc = np.bincount(doc_of_token[stream_keep], minlength=len(kept))
        # Samples per document after dropping short ones; documents left with none are not written.
        owner = np.repeat(np.arange(len(doc_counts)), np.asarray(doc_counts, dtype=np.int64))
        counts = np.bincount(owner[keep], minlength=len(doc_counts))
        doc_counts_kept = [int(c) for c in counts if c > 0]

        stats = {
            "lines": res.lines.tolist(),
            "dropped": {k: v.tolist() for k, v in sorted(dropped.items())},
            "documents": np.bincount(kept_sources, minlength=self.n_sources).tolist(),
            "tokens": np.bincount(kept_sources, weights=tokens_per_doc, minlength=self.n_sources).astype(np.int64).tolist(),
            "sequences": np.bincount(
                kept_sources[doc_of_token[sample_first[keep]]] if keep.any() else np.zeros(0, dtype=np.int64),
                minlength=self.n_sources,
            ).tolist(),
            "short_samples": int((~keep).sum()),
            "short_sample_tokens": int(lengths[~keep].sum()),
            "chars": res.chars,
        }
        with atomic_dir(_chunk_dir(self.work, res.index)) as tmp:
            with IndexedDatasetWriter(tmp / "data", self.dtype) as writer:
                writer.add_flat(stream[token_keep], lengths[keep], doc_counts_kept)
            if res.keys is not None:
                width = () if cfg.dedup.mode == "exact" else (cfg.dedup.num_perm,)
                keys = np.asarray(kept_keys, dtype=np.uint64).reshape((len(kept_keys),) + width)
                np.save(tmp / "keys.npy", keys)
            (tmp / "stats.json").write_text(json.dumps(stats), encoding="utf-8")


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
    writer = _ChunkWriter(config, work, dtype, tokenizer.bos_token_id, tokenizer.eos_token_id, len(sources))
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
            if _chunk_dir(work, chunk.index).is_dir():
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
        stats = json.loads((_chunk_dir(work, index) / "stats.json").read_text(encoding="utf-8"))
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
    merged = concat_shards([_chunk_dir(work, i) / "data" for i in range(n_chunks)], prefix)
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
