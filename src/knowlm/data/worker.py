"""The per-chunk work done in parallel: decode, clean, filter, dedup keys, split, tokenize.

A worker gets one chunk of raw lines and returns compact numpy arrays (token ids, sentence
lengths in tokens, dedup keys) plus drop counts. Tokenization is one batched call per chunk on
the fast (Rust) tokenizer: each document is encoded whole, and sentence boundaries are mapped to
token boundaries with ``Encoding.char_to_token``, so a document's tokens are exactly what the
tokenizer gives for its full text (no extra "▁" at every sentence start).
"""

from __future__ import annotations

import json
import sys
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from knowlm.data.clean import Blocklist, FilterConfig, clean_text
from knowlm.data.dedup import DedupConfig, exact_key, minhash_signature
from knowlm.data.sources import Chunk
from knowlm.data.vectorized import ChunkText, char_table, quality_reasons


@dataclass
class WorkerConfig:
    json_key: str = "text"
    lang: str = "auto"
    filter: FilterConfig = field(default_factory=FilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    formats: tuple[str, ...] = ()  # per source: "json" | "text"


@dataclass
class ChunkResult:
    index: int
    tokens: np.ndarray  # int32, all kept documents back to back, no BOS/EOS
    doc_tokens: np.ndarray  # int64 tokens per kept document
    sent_lens: np.ndarray  # int32 sentence lengths (tokens), all documents back to back
    doc_sents: np.ndarray  # int32 sentences per document
    doc_sources: np.ndarray  # int16
    keys: np.ndarray | None  # uint64 [docs] (exact) or [docs, num_perm] (minhash)
    lines: np.ndarray  # int64 lines read per source (length = number of sources)
    dropped: dict[str, np.ndarray]  # reason -> per-source counts
    chars: int


_STATE: dict = {}


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM when the parent dies (kill -9 must not leave orphans)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def init_worker(tokenizer, config: WorkerConfig, subprocess: bool = False) -> None:
    """Pool initializer. With fork the parent's tokenizer object is inherited, not reloaded."""
    if subprocess and sys.platform.startswith("linux"):
        _die_with_parent()
    _STATE["tokenizer"] = tokenizer
    _STATE["config"] = config
    _STATE["blocklist"] = Blocklist(config.filter.terms()) if config.filter.enabled else None
    char_table()  # built once (with fork, already built by the parent)


def _decode(line: bytes, fmt: str, key: str) -> tuple[str | None, str | None]:
    """(text, None) or (None, drop reason)."""
    try:
        raw = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, "invalid_utf8"
    if fmt == "json":
        if not raw.strip():
            return None, "empty"
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            return None, "invalid_json"
        if not isinstance(record, dict):
            return None, "invalid_json"
        text = record.get(key)
        if not isinstance(text, str):
            return None, "missing_key"
        return text, None
    return raw.rstrip("\n"), None


def _token_lengths(encoding, offsets: list[int], n_tokens: int) -> list[int]:
    """Sentence lengths in tokens: each char boundary goes before the token containing it."""
    cuts = []
    previous = 0
    for off in offsets:
        tok = encoding.char_to_token(off)
        if tok is None:
            continue  # a character the normaliser removed: the next boundary will do
        if tok > previous:
            cuts.append(tok - previous)
            previous = tok
    if n_tokens > previous:
        cuts.append(n_tokens - previous)
    return cuts


def backend_of(tokenizer):
    """The Rust tokenizer behind a fast Hugging Face tokenizer, or None."""
    return getattr(tokenizer, "backend_tokenizer", None)


def process_chunk(chunk: Chunk) -> ChunkResult:
    config: WorkerConfig = _STATE["config"]
    tokenizer = _STATE["tokenizer"]
    n_sources = len(config.formats)
    lines_read = np.bincount(chunk.sources, minlength=n_sources).astype(np.int64)
    dropped: dict[str, np.ndarray] = {}

    def drop(reason: str, sid: int) -> None:
        if reason not in dropped:
            dropped[reason] = np.zeros(n_sources, dtype=np.int64)
        dropped[reason][sid] += 1

    texts, sources = [], []
    fcfg, dcfg = config.filter, config.dedup
    normalization = fcfg.normalization if fcfg.enabled else ""
    for line, sid in zip(chunk.blob.split(b"\n")[:-1], chunk.sources.tolist()):
        text, reason = _decode(line, config.formats[sid], config.json_key)
        if reason is not None:
            drop(reason, sid)
            continue
        texts.append(text)
        sources.append(sid)

    # Whole-chunk numpy passes instead of per-document regexes (see knowlm.data.vectorized).
    analysis = ChunkText.build(texts)
    untidy = analysis.untidy().tolist()
    cleaned = [
        clean_text(t, normalization) if dirty or (normalization and not unicodedata.is_normalized(normalization, t)) else t.strip()
        for t, dirty in zip(texts, untidy)
    ]
    if any(a is not b for a, b in zip(cleaned, texts)):  # str.strip() returns the same object when it strips nothing
        nonempty = [i for i, t in enumerate(cleaned) if t]
        for i in range(len(cleaned)):
            if not cleaned[i]:
                drop("empty", sources[i])
        texts = [cleaned[i] for i in nonempty]
        sources = [sources[i] for i in nonempty]
        analysis = ChunkText.build(texts)
    if fcfg.enabled and texts:
        reasons = quality_reasons(analysis, fcfg, _STATE["blocklist"])
        keep = [i for i, r in enumerate(reasons) if r is None]
        for i, r in enumerate(reasons):
            if r is not None:
                drop(r, sources[i])
    else:
        keep = list(range(len(texts)))
    langs = analysis.langs() if config.lang == "auto" else [config.lang] * len(texts)
    offsets = analysis.boundaries(langs) if backend_of(tokenizer) is not None else None
    texts = [texts[i] for i in keep]
    sources = [sources[i] for i in keep]
    chars = sum(map(len, texts))
    if dcfg.mode == "exact":
        keys = [exact_key(t) for t in texts]
    elif dcfg.mode == "minhash":
        keys = [minhash_signature(t, dcfg.num_perm, dcfg.shingle) for t in texts]

    ids: list[int] = []
    doc_tokens, sent_lens, doc_sents = [], [], []
    backend = backend_of(tokenizer)
    if backend is not None and texts:
        encodings = backend.encode_batch(texts, add_special_tokens=False)
        for i, enc in zip(keep, encodings):
            doc_ids = enc.ids
            lens = _token_lengths(enc, offsets[i], len(doc_ids))
            ids.extend(doc_ids)
            doc_tokens.append(len(doc_ids))
            sent_lens.extend(lens)
            doc_sents.append(len(lens))
    elif texts:  # a slow (Python) tokenizer: tokenize sentence by sentence
        from knowlm.data.sentences import split_sentences

        for text in texts:
            sentences = split_sentences(text, config.lang)
            encoded = tokenizer(sentences, add_special_tokens=False)["input_ids"]
            lens = [len(e) for e in encoded if len(e)]
            for e in encoded:
                ids.extend(e)
            doc_tokens.append(sum(lens))
            sent_lens.extend(lens)
            doc_sents.append(len(lens))

    if dcfg.mode == "exact":
        key_array = np.asarray(keys, dtype=np.uint64)
    elif dcfg.mode == "minhash":
        key_array = np.stack(keys) if keys else np.zeros((0, dcfg.num_perm), dtype=np.uint64)
    else:
        key_array = None
    return ChunkResult(
        index=chunk.index,
        tokens=np.asarray(ids, dtype=np.int32),
        doc_tokens=np.asarray(doc_tokens, dtype=np.int64),
        sent_lens=np.asarray(sent_lens, dtype=np.int32),
        doc_sents=np.asarray(doc_sents, dtype=np.int32),
        doc_sources=np.asarray(sources, dtype=np.int16),
        keys=key_array,
        lines=lines_read,
        dropped=dropped,
        chars=chars,
    )
