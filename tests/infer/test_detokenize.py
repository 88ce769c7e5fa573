"""Incremental detokenization equals decoding the whole answer, token by token, and the text it calls
stable is never taken back."""

from __future__ import annotations

import random

from knowlm.infer.detokenize import IncrementalText


def sequences(tokenizer, count: int, length: int):
    """Random answers drawn to stress the decoder: byte-fallback pieces (valid UTF-8 runs and stray
    bytes), pieces with and without a leading '▁', special tokens, digits."""
    vocab = tokenizer.get_vocab()
    byte_ids = {int(piece[3:5], 16): i for piece, i in vocab.items() if len(piece) == 6 and piece.startswith("<0x")}
    pieces = [i for piece, i in vocab.items() if not piece.startswith("<0x")]
    specials = list(tokenizer.all_special_ids)
    rng = random.Random(0)
    for _ in range(count):
        ids = []
        while len(ids) < length:
            kind = rng.random()
            if kind < 0.15:  # a valid multi-byte character as byte pieces
                ids += [byte_ids[b] for b in rng.choice("杭州知识图谱é😀").encode("utf-8")]
            elif kind < 0.22:  # a stray byte
                ids.append(byte_ids[rng.randrange(128, 256)])
            elif kind < 0.27:
                ids.append(rng.choice(specials))
            else:
                ids.append(rng.choice(pieces))
        yield ids[:length]


def test_incremental_text_equals_full_decode_and_stable_text_only_grows(tiny_tokenizer_dir):
    from knowlm.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_tokenizer_dir))
    assert IncrementalText(tokenizer).windowed  # the fast path is the one under test
    checked, windows = 0, []
    for ids in sequences(tokenizer, 60, 48):
        text = IncrementalText(tokenizer)
        stable = ""
        for n in range(1, len(ids) + 1):
            assert text.update(ids[:n]) == tokenizer.decode(ids[:n], skip_special_tokens=True), (ids[:n], n)
            assert text.stable.startswith(stable) and text.text.startswith(text.stable)
            stable = text.stable
            checked += 1
        assert text.windowed  # never fell back to full decodes
        windows.append(text.read_offset)
    assert checked == 60 * 48
    assert sum(windows) > 60 * 40  # the window moved along: this was the incremental path, not full decodes
