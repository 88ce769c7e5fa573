"""``knowlm data prepare``, parent side: one processed chunk -> one small indexed dataset, in corpus order.

The workers hand back each chunk's tokens, sentence lengths and dedup keys; here the parent makes the
de-duplication decisions (so the first copy always wins), packs the kept documents into samples
(``document``, ``stream`` or ``best-fit``, see :class:`knowlm.data.pipeline.PrepareConfig`) with array
writes, and writes the chunk atomically under ``PREFIX.work/`` with its statistics and dedup keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from knowlm.data.dedup import Deduplicator
from knowlm.data.indexed import IndexedDatasetWriter
from knowlm.data.packing import best_fit, pack_lengths, with_special_tokens
from knowlm.data.worker import ChunkResult
from knowlm.utils.atomic import atomic_dir

if TYPE_CHECKING:
    from knowlm.data.pipeline import PrepareConfig


def chunk_dir(work: Path, index: int) -> Path:
    """Where chunk ``index`` of a run is written (and found again by a resumed run)."""
    return work / f"chunk-{index:06d}"


class ChunkWriter:
    """Parent-side, in corpus order: dedup decisions, packing, writing one chunk atomically."""

    def __init__(self, config: PrepareConfig, work: Path, dtype, bos: int | None, eos: int | None, n_sources: int):
        self.config, self.work, self.dtype = config, work, dtype
        self.bos, self.eos, self.n_sources = bos, eos, n_sources
        self.dedup = Deduplicator(config.dedup)

    def reload(self, index: int) -> None:
        """A chunk finished by an earlier run: only its dedup keys matter now."""
        path = chunk_dir(self.work, index) / "keys.npy"
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
        with atomic_dir(chunk_dir(self.work, res.index)) as tmp:
            with IndexedDatasetWriter(tmp / "data", self.dtype) as writer:
                writer.add_flat(stream[token_keep], lengths[keep], doc_counts_kept)
            if res.keys is not None:
                width = () if cfg.dedup.mode == "exact" else (cfg.dedup.num_perm,)
                keys = np.asarray(kept_keys, dtype=np.uint64).reshape((len(kept_keys),) + width)
                np.save(tmp / "keys.npy", keys)
            (tmp / "stats.json").write_text(json.dumps(stats), encoding="utf-8")
