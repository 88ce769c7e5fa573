"""Greedy packing invariants."""

import random

from knowlm.data import pack_lengths
from knowlm.data.packing import with_special_tokens


def test_greedy_whole_sentences():
    assert pack_lengths([3, 4, 5, 2], 8) == [7, 7]
    assert pack_lengths([8, 1], 8) == [8, 1]
    assert pack_lengths([], 8) == []


def test_overlong_sentence_is_cut_into_pieces_that_fit():
    assert pack_lengths([3, 20, 2], 8) == [8, 8, 7, 2]
    assert pack_lengths([17], 8) == [8, 8, 1]


def test_invariants_on_random_documents():
    rng = random.Random(0)
    for _ in range(500):
        seq_len = rng.randint(2, 64)
        sentences = [rng.randint(1, 100) for _ in range(rng.randint(0, 30))]
        lens = with_special_tokens(sentences, True, True)
        samples = pack_lengths(lens, seq_len)
        assert sum(samples) == sum(lens)  # no overlap, nothing lost
        assert all(0 < s <= seq_len for s in samples)
        # every boundary between samples is a sentence boundary unless a sentence is too long
        bounds = set()
        total = 0
        for n in lens:
            total += n
            bounds.add(total)
        pos = 0
        long_spans = []
        total = 0
        for n in lens:
            if n > seq_len:
                long_spans.append((total, total + n))
            total += n
        for s in samples[:-1]:
            pos += s
            assert pos in bounds or any(a < pos < b for a, b in long_spans)
