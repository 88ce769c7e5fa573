"""Greedy packing of whole sentences into samples of at most ``seq_len`` tokens.

Samples are consecutive, non-overlapping slices of a document's token stream
``[BOS] + tokens + [EOS]``: sentences are added while they fit; a sentence that does not fit
starts the next sample; a sentence longer than ``seq_len`` fills the current sample and is cut
at token boundaries into pieces that fit. So no sample exceeds the limit and decoding the
samples of a document in order gives back its text.
"""

from __future__ import annotations

from typing import Sequence


def pack_lengths(sentence_lengths: Sequence[int], seq_len: int) -> list[int]:
    """Sample lengths covering ``sum(sentence_lengths)`` tokens, greedily, whole sentences first."""
    if seq_len < 1:
        raise ValueError("seq_len must be at least 1")
    samples: list[int] = []
    current = 0
    for n in sentence_lengths:
        if n <= 0:
            continue
        if current + n <= seq_len:
            current += n
        elif n <= seq_len:
            samples.append(current)
            current = n
        else:  # longer than a sample: fill this one, then whole pieces, keep the rest open
            n -= seq_len - current
            samples.append(seq_len)
            while n > seq_len:
                samples.append(seq_len)
                n -= seq_len
            current = n
    if current:
        samples.append(current)
    return samples


def with_special_tokens(sentence_lengths: list[int], bos: bool, eos: bool) -> list[int]:
    """BOS joins the first sentence and EOS the last, so they are never separated from text."""
    lens = list(sentence_lengths)
    if not lens:
        return [int(bos) + int(eos)] if (bos or eos) else []
    lens[0] += int(bos)
    lens[-1] += int(eos)
    return lens


def best_fit(documents: Sequence[Sequence[int]], seq_len: int) -> list[list[tuple[int, int, int]]]:
    """Pack documents (their sentence lengths, BOS/EOS included) into samples of at most ``seq_len``.

    Documents are taken in order. What is left of a document goes whole into the open sample with
    the least room that holds it (best fit); if no open sample holds it, a prefix of its sentences
    that fills some open sample exactly is cut off and put there; otherwise it starts a new sample
    (cut greedily at sentence boundaries when longer than ``seq_len``). A sentence longer than
    ``seq_len`` is first cut at token boundaries into pieces that fit. So every piece is a run of
    whole sentences, no sample exceeds the limit, and a document is its pieces in placement order.

    Returns the samples (ordered by when they were opened) as lists of pieces
    ``(document index, token offset in the document, tokens)`` in placement (= corpus) order.
    """
    from bisect import bisect_left, bisect_right
    from itertools import accumulate

    if seq_len < 1:
        raise ValueError("seq_len must be at least 1")
    samples: list[list[tuple[int, int, int]]] = []
    room: list[int] = []  # free tokens of the open samples, ascending
    owner: list[int] = []  # the sample each entry of ``room`` belongs to
    for d, sentence_lengths in enumerate(documents):
        sents: list[int] = []
        for n in sentence_lengths:
            while n > seq_len:
                sents.append(seq_len)
                n -= seq_len
            if n > 0:
                sents.append(n)
        pos = offset = 0
        while pos < len(sents):
            prefix = list(accumulate(sents[pos:]))
            total = prefix[-1]
            target = count = None
            k = bisect_left(room, total) if total <= seq_len else len(room)
            if k < len(room):  # the rest of the document fits whole into an open sample
                target, count = k, len(prefix)
            else:  # a prefix that fills an open sample exactly
                for j, tokens in enumerate(prefix[:-1]):
                    if tokens > seq_len:
                        break
                    k = bisect_left(room, tokens)
                    if k < len(room) and room[k] == tokens:
                        target, count = k, j + 1  # keep looking: a longer exact fill is better
            if target is None:
                count = len(prefix) if total <= seq_len else max(1, sum(1 for t in prefix if t <= seq_len))
                sample, free = len(samples), seq_len - prefix[count - 1]
                samples.append([])
            else:
                free = room.pop(target) - prefix[count - 1]
                sample = owner.pop(target)
            samples[sample].append((d, offset, prefix[count - 1]))
            if free > 0:  # equal rooms stay in opening order: ties go to the older sample
                k = bisect_right(room, free)
                room.insert(k, free)
                owner.insert(k, sample)
            pos += count
            offset += prefix[count - 1]
    return samples
