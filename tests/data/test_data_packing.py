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


def test_best_fit_packs_whole_pieces_without_overlap():
    from knowlm.data.packing import best_fit

    assert best_fit([6, 2, 5, 3], 8) == [[0, 1], [2, 3]]
    assert best_fit([], 8) == []
    rng = random.Random(1)
    best_total = greedy_total = 0
    for _ in range(200):
        seq_len = rng.randint(4, 64)
        pieces = [rng.randint(1, seq_len) for _ in range(rng.randint(0, 60))]
        samples = best_fit(pieces, seq_len)
        flat = sorted(i for s in samples for i in s)
        assert flat == list(range(len(pieces)))  # every piece exactly once, never split
        assert all(sum(pieces[i] for i in s) <= seq_len and s == sorted(s) for s in samples)
        assert [s[0] for s in samples] == sorted(s[0] for s in samples)
        best_total += len(samples)
        greedy_total += len(pack_lengths(pieces, seq_len))  # next fit in corpus order
        assert best_fit(pieces, seq_len) == samples  # deterministic
    assert best_total < 0.85 * greedy_total
