"""The per-chunk work done in parallel: decode, clean, filter, dedup keys, split, tokenize.

A worker gets one chunk of raw lines and returns compact numpy arrays (token ids, sentence
lengths in tokens, dedup keys) plus drop counts. Tokenization is one batched call per chunk on
the fast (Rust) tokenizer: each document is encoded whole, and sentence boundaries are mapped to
token boundaries with ``Encoding.char_to_token``, so a document's tokens are exactly what the
tokenizer gives for its full text (no extra "▁" at every sentence start).
"""

from __future__ import annotations

import itertools
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
    fast_offsets: bool = True  # read token offsets off the vocabulary when the tokenizer allows it


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


def _plain_signals() -> None:
    """A forked worker inherits the CLI's SIGTERM handler (which raises ``Terminated`` and then ignores
    further TERMs); ``Pool.terminate()`` must simply end it, or a worker that swallowed the exception
    blocks the parent's join forever. Ctrl-C is the parent's to handle (it terminates the pool)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def init_worker(tokenizer, config: WorkerConfig, subprocess: bool = False) -> None:
    """Pool initializer. With fork the parent's tokenizer object is inherited, not reloaded."""
    if subprocess:
        _plain_signals()
    if subprocess and sys.platform.startswith("linux"):
        _die_with_parent()
    _STATE["tokenizer"] = tokenizer
    _STATE["config"] = config
    _STATE["blocklist"] = Blocklist(config.filter.terms()) if config.filter.enabled else None
    backend = backend_of(tokenizer)
    _STATE["piece_chars"] = piece_chars(backend) if backend is not None and config.fast_offsets else None
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


def piece_chars(backend) -> np.ndarray | None:
    """Characters of text that each token id stands for, when the vocabulary alone tells it.

    True for SentencePiece-style tokenizers (no normaliser, Metaspace pre-tokenizer that turns each
    space into "▁" and prepends one "▁" to the text, BPE/Unigram pieces or <0xNN> byte fallback:
    a byte token counts one character when it starts a UTF-8 sequence, else zero). Then token
    offsets follow from the ids, and tokenization can skip tracking them (``encode_batch_fast``).
    Added tokens get -1: documents containing them take the offset-tracking path.
    """
    from tokenizers import pre_tokenizers

    pre = backend.pre_tokenizer
    if backend.normalizer is not None or not isinstance(pre, pre_tokenizers.Metaspace):
        return None
    if pre.replacement != "\u2581" or pre.prepend_scheme != "first" or type(backend.model).__name__ not in ("BPE", "Unigram"):
        return None
    vocab = backend.get_vocab(with_added_tokens=True)
    table = np.full(max(vocab.values()) + 1, -1, dtype=np.int64)
    byte_fallback = bool(getattr(backend.model, "byte_fallback", False))
    for piece, index in vocab.items():
        if byte_fallback and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            value = int(piece[3:5], 16)
            table[index] = 0 if 0x80 <= value < 0xC0 else 1
        else:
            table[index] = len(piece)
    for index in backend.get_added_tokens_decoder():
        if index < len(table):
            table[index] = -1
    return table


def tokenize(backend, texts: list[str], offsets: list[list[int]], chars: np.ndarray | None):
    """(ids int32, tokens per document, sentence lengths in tokens, sentences per document).

    Documents are encoded whole; each sentence start (a character offset) goes before the token
    containing it. With a ``piece_chars`` table the ids alone give the token offsets; a document
    whose pieces do not add up to its text is re-encoded with offset tracking.
    """
    n_docs = len(texts)
    if chars is None:
        encodings = backend.encode_batch(texts, add_special_tokens=False)
        fallback = list(range(n_docs))
        ids = np.zeros(0, dtype=np.int32)
        doc_tokens = np.zeros(n_docs, dtype=np.int64)
    else:
        encodings = backend.encode_batch_fast(texts, add_special_tokens=False)
        per_doc = [e.ids for e in encodings]
        doc_tokens = np.fromiter(map(len, per_doc), dtype=np.int64, count=n_docs)
        ids = np.fromiter(itertools.chain.from_iterable(per_doc), dtype=np.int32, count=int(doc_tokens.sum()))
        tok_start = np.concatenate([[0], np.cumsum(doc_tokens)[:-1]])
        width = chars[np.minimum(ids, len(chars) - 1)]
        width[ids >= len(chars)] = -1
        text_len = np.fromiter(map(len, texts), dtype=np.int64, count=n_docs)
        prepend = np.fromiter((not t.startswith("\u2581") for t in texts), dtype=np.int64, count=n_docs)
        ok = doc_tokens > 0
        nz = np.flatnonzero(ok)
        if len(nz):
            sums = np.add.reduceat(width, tok_start[nz])
            mins = np.minimum.reduceat(width, tok_start[nz])
            ok[nz] = (sums == text_len[nz] + prepend[nz]) & (mins >= 0)
        fallback = np.flatnonzero(~ok).tolist()
        # Character position (within the chunk's concatenated pre-tokenized texts) of each sentence start.
        char_start = np.concatenate([[0], np.cumsum(text_len + prepend)[:-1]])
        n_cuts = np.fromiter(map(len, offsets), dtype=np.int64, count=n_docs)
        flat = np.fromiter(itertools.chain.from_iterable(offsets), dtype=np.int64, count=int(n_cuts.sum()))
        cut_doc = np.repeat(np.arange(n_docs), n_cuts)
        pos = flat + np.repeat(char_start + prepend, n_cuts)
        # End of each token in chunk coordinates, computed per document (and clamped to it) so that a
        # document the table cannot explain does not shift the ones after it.
        span = text_len + prepend
        local = np.cumsum(np.maximum(width, 0))
        before = np.where(tok_start > 0, local[np.maximum(tok_start - 1, 0)], 0) if len(local) else np.zeros(n_docs, np.int64)
        local -= np.repeat(before, doc_tokens)
        tok_end = np.minimum(local, np.repeat(span, doc_tokens)) + np.repeat(char_start, doc_tokens)
        cut_tok = np.searchsorted(tok_end, pos, side="right")  # the token holding that character
        good = ok[cut_doc] & (cut_tok > tok_start[cut_doc])
        bounds = np.unique(np.concatenate([tok_start, cut_tok[good], [len(ids)]]))
        sent = np.diff(bounds)
        doc_sents = np.diff(np.searchsorted(bounds, np.append(tok_start, len(ids))))
        if not fallback:
            return ids, doc_tokens, sent, doc_sents
        encodings = backend.encode_batch([texts[i] for i in fallback], add_special_tokens=False)
    # Offset tracking: for every document (no table), or for the few the table could not explain.
    redo = dict(zip(fallback, encodings))
    id_parts, sent_parts, tokens, sents = [], [], [], []
    tok_pos = sent_pos = 0
    for d in range(n_docs):
        if d in redo:
            enc = redo[d]
            lens = _token_lengths(enc, offsets[d], len(enc.ids))
            id_parts.append(np.asarray(enc.ids, dtype=np.int32))
            sent_parts.append(np.asarray(lens, dtype=np.int64))
            tokens.append(len(enc.ids))
            sents.append(len(lens))
        else:
            n_tok, n_sent = int(doc_tokens[d]), int(doc_sents[d])
            id_parts.append(ids[tok_pos : tok_pos + n_tok])
            sent_parts.append(sent[sent_pos : sent_pos + n_sent])
            tokens.append(n_tok)
            sents.append(n_sent)
        if chars is not None:  # the fast pass's arrays hold every document, explained or not
            tok_pos += int(doc_tokens[d])
            sent_pos += int(doc_sents[d])
    return (
        np.concatenate(id_parts) if id_parts else np.zeros(0, dtype=np.int32),
        np.asarray(tokens, dtype=np.int64),
        np.concatenate(sent_parts) if sent_parts else np.zeros(0, dtype=np.int64),
        np.asarray(sents, dtype=np.int64),
    )


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
        ids, doc_tokens, sent_lens, doc_sents = tokenize(backend, texts, [offsets[i] for i in keep], _STATE.get("piece_chars"))
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
        tokens=ids if isinstance(ids, np.ndarray) else np.asarray(ids, dtype=np.int32),
        doc_tokens=np.asarray(doc_tokens, dtype=np.int64),
        sent_lens=np.asarray(sent_lens, dtype=np.int32),
        doc_sents=np.asarray(doc_sents, dtype=np.int32),
        doc_sources=np.asarray(sources, dtype=np.int16),
        keys=key_array,
        lines=lines_read,
        dropped=dropped,
        chars=chars,
    )
