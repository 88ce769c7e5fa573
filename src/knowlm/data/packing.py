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


def best_fit(lengths: Sequence[int], seq_len: int) -> list[list[int]]:
    """Bin-pack whole pieces into samples of at most ``seq_len`` tokens, best-fit decreasing.

    Pieces are taken longest first (ties: earlier first) and each goes into the open sample with
    the least room that still fits it, else into a new sample. Returns samples as lists of piece
    indices; inside a sample the pieces keep corpus order, and samples are ordered by their first
    piece, so the result depends only on ``lengths``. A piece longer than ``seq_len`` is an error:
    cut documents with :func:`pack_lengths` first.
    """
    from bisect import bisect_left

    if any(n > seq_len for n in lengths):
        raise ValueError("a piece is longer than seq_len")
    order = sorted((i for i, n in enumerate(lengths) if n > 0), key=lambda i: (-lengths[i], i))
    samples: list[list[int]] = []
    room: list[int] = []  # free tokens of the open samples, ascending
    owner: list[int] = []  # the sample each entry of ``room`` belongs to
    for i in order:
        n = lengths[i]
        k = bisect_left(room, n)
        if k == len(room):
            target, free = len(samples), seq_len - n
            samples.append([i])
        else:
            free = room.pop(k) - n
            target = owner.pop(k)
            samples[target].append(i)
        if free > 0:
            k = bisect_left(room, free)
            room.insert(k, free)
            owner.insert(k, target)
    for sample in samples:
        sample.sort()
    samples.sort(key=lambda s: s[0])
    return samples
