"""Greedy packing invariants."""

import random
from itertools import accumulate

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


def test_best_fit_packs_whole_sentences_without_overlap():
    from knowlm.data.packing import best_fit

    assert best_fit([[3, 3], [6], [2]], 8) == [[(0, 0, 6), (2, 0, 2)], [(1, 0, 6)]]
    assert best_fit([[5], [3, 4]], 8) == [[(0, 0, 5), (1, 0, 3)], [(1, 3, 4)]]  # a prefix fills a sample exactly
    assert best_fit([[3, 20]], 8) == [[(0, 0, 3), (0, 19, 4)], [(0, 3, 8)], [(0, 11, 8)]]
    assert best_fit([], 8) == []
    rng = random.Random(1)
    packed = greedy = 0
    for _ in range(200):
        seq_len = rng.randint(4, 64)
        docs = [[rng.randint(1, seq_len + 10) for _ in range(rng.randint(1, 6))] for _ in range(rng.randint(0, 30))]
        samples = best_fit(docs, seq_len)
        assert all(0 < sum(n for _, _, n in s) <= seq_len for s in samples)
        for d, sents in enumerate(docs):  # a document is its pieces in placement order, cut at sentence ends
            pieces = sorted((i, off, n) for i, s in enumerate(samples) for doc, off, n in s if doc == d)
            pieces.sort(key=lambda p: p[1])
            assert [off for _, off, _ in pieces] == list(accumulate([0] + [n for _, _, n in pieces]))[:-1]
            assert sum(n for _, _, n in pieces) == sum(sents)
            ends = set(accumulate(sents))
            assert all(off + n in ends or any(x > seq_len for x in sents) for _, off, n in pieces)
        assert best_fit(docs, seq_len) == samples  # deterministic
        packed += len(samples)
        greedy += sum(len(pack_lengths(d, seq_len)) for d in docs)  # one document per sample
    assert packed < 0.9 * greedy
