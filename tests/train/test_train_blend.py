"""Blending: --blend-by tokens gives each source its share of the tokens (Megatron's semantics),
--blend-by sequences its share of the examples; with packing every batch keeps the shares."""

from __future__ import annotations

import numpy as np
import pytest

from knowlm.train.batching import ExampleStream
from knowlm.train.data_sft import TokenizedExamples
from knowlm.train.sampling import BlendedExamples


def _source(n: int, low: int, high: int, offset: int, seed: int) -> TokenizedExamples:
    rng = np.random.default_rng(seed)
    ids = [np.full(int(rng.integers(low, high + 1)), offset + i % 50, dtype=np.int32) for i in range(n)]
    return TokenizedExamples(ids, [x.copy() for x in ids])


@pytest.fixture(scope="module")
def sources():
    return [_source(300, 4, 12, 100, 0), _source(120, 24, 40, 200, 1)]  # A: short examples, B: long ones


def _shares(stream: ExampleStream, batches: int) -> tuple[list[float], list[float], float, float]:
    """Per-batch token share and row share of source A; overall token and example shares."""
    per_batch_tokens, per_batch_rows = [], []
    tokens = [0, 0]
    examples = [0, 0]
    for _ in range(batches):
        batch = stream.next_batch()
        counts = [0, 0]
        for row, sources in zip(batch["input_ids"].tolist(), batch["sources"]):
            for token in row:
                if token >= 100:
                    counts[(token - 100) // 100] += 1
            for d in sources:
                examples[d] += 1
        per_batch_tokens.append(counts[0] / sum(counts))
        per_batch_rows.append(sum(1 for s in batch["sources"] if s[0] == 0) / len(batch["sources"]))
        tokens = [t + c for t, c in zip(tokens, counts)]
    return per_batch_tokens, per_batch_rows, tokens[0] / sum(tokens), examples[0] / sum(examples)


def test_blend_by_tokens_gives_the_token_share(sources):
    stream = ExampleStream(BlendedExamples(sources, [0.7, 0.3], seed=0, blend_by="tokens"), 64, micro_batch_size=10)
    _, _, token_share, _ = _shares(stream, 100)
    assert token_share == pytest.approx(0.7, abs=0.02)
    by_seq = ExampleStream(BlendedExamples(sources, [0.7, 0.3], seed=0, blend_by="sequences"), 64, micro_batch_size=10)
    per_batch_tokens, _, token_share, example_share = _shares(by_seq, 100)
    assert example_share == pytest.approx(0.7, abs=0.01)  # exactly 7 of every 10 examples
    assert token_share < 0.45  # long B examples dominate the tokens: what --blend-by tokens fixes


@pytest.mark.parametrize("blend_by", ["tokens", "sequences"])
def test_packed_batches_keep_the_share_in_every_batch(sources, blend_by):
    blend = BlendedExamples(sources, [0.7, 0.3], seed=0, blend_by=blend_by)
    stream = ExampleStream(blend, 64, micro_batch_size=10, packing=True)
    per_batch_tokens, per_batch_rows, token_share, example_share = _shares(stream, 60)
    if blend_by == "tokens":
        assert token_share == pytest.approx(0.7, abs=0.02)
        # rows follow the blend within one row per batch, and every row is filled from one source
        assert all(abs(s - 0.7) <= 0.12 for s in per_batch_tokens), (min(per_batch_tokens), max(per_batch_tokens))
    else:
        assert example_share == pytest.approx(0.7, abs=0.03)
    rows_a = [r for r in per_batch_rows]
    assert max(rows_a) - min(rows_a) <= 0.1 + 1e-9  # the row split of a batch moves by at most one row


def test_packed_stream_resumes_exactly_and_covers_an_epoch(sources):
    blend = BlendedExamples(sources, None, seed=5)
    stream = ExampleStream(blend, 64, micro_batch_size=4, packing=True)
    for _ in range(7):
        stream.next_batch()
    state = stream.state_dict()
    expected = stream.next_batch()["input_ids"]
    again = ExampleStream(BlendedExamples(sources, None, seed=5), 64, micro_batch_size=4, packing=True)
    again.load_state_dict(state)
    assert (again.next_batch()["input_ids"] == expected).all()
    fresh = ExampleStream(BlendedExamples(sources, None, seed=5), 64, micro_batch_size=1, packing=True)
    for _ in range(fresh.rows_per_epoch()):
        fresh.next_batch()
    consumed = fresh.source_positions
    assert all(abs(c - len(s)) <= 0.05 * len(s) for c, s in zip(consumed, sources)), consumed  # one pass over each
