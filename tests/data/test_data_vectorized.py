"""The chunk-wide numpy analysis gives exactly what the per-document reference functions give."""

import random

import numpy as np

from knowlm.data.clean import _DIGIT, _SYMBOL, _WORD, _dup_ngram_ratio
from knowlm.data.sentences import detect_lang, sentence_offsets
from knowlm.data.vectorized import DIGIT, SYMBOL, ChunkText, needs_reference_ngrams

PIECES = list("abc XYZ.!?。！？；…”」）\n\t 1.2 中文é٣") + [
    "Dr. ", "U.S. ", "e.g. ", "。”", "\r\n", "J. K. ", "p.m. the", "\u3000", "\U0001F600", "\U00020000",
    "Ａ", "ǅ", "the cat sat ", "on the mat ", "猫在垫子上", "１２３", "foo_bar", "?!", "...", "'Hi.' ",
]


def random_texts(rng, n):
    texts = ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 80))) for _ in range(n)]
    return [t.strip() or "x" if rng.random() < 0.5 else t for t in texts]  # the pipeline strips; the reference need not


def reference(texts, n=3):
    out = []
    for text in texts:
        words = _WORD.findall(text.lower())
        ratio = _dup_ngram_ratio(words, n) if len(words) >= 2 * n else 0.0
        lang = detect_lang(text)
        out.append((len(_DIGIT.findall(text)), len(_SYMBOL.findall(text)), lang, len(words), ratio,
                    sentence_offsets(text, lang), sentence_offsets(text, "zh"), sentence_offsets(text, "en")))
    return out


def test_vectorized_equals_reference_on_random_text():
    rng = random.Random(0)
    for _ in range(30):
        texts = random_texts(rng, rng.randint(1, 40))
        chunk = ChunkText.build(texts)
        langs = chunk.langs()
        n_words, ratio = chunk.dup_ngram_ratio(3, 6)
        got = list(zip(chunk.count(DIGIT).tolist(), chunk.count(SYMBOL).tolist(), langs, n_words.tolist(),
                       ratio.tolist(), chunk.boundaries(langs), chunk.boundaries(["zh"] * len(texts)),
                       chunk.boundaries(["en"] * len(texts))))
        for text, g, want in zip(texts, got, reference(texts)):
            assert g == want, text


def test_vectorized_edge_cases():
    texts = ["Dr. Curie won. The U.S. has e.g. Harvard. Mr. Smith left.", "他说：“你好。”然后走了！真的吗？是的……好；再见。",
             "Hello world.你好世界。OK! Next line\nsecond line", "第一行\n\n第二行!然后", "J. K. Rowling wrote 7 books. It cost 3.5.",
             "click here to win big " * 10, "x", "a.", "End?"]
    chunk = ChunkText.build(texts)
    langs = chunk.langs()
    assert langs == [detect_lang(t) for t in texts]
    assert chunk.boundaries(langs) == [sentence_offsets(t, lang) for t, lang in zip(texts, langs)]
    n_words, ratio = chunk.dup_ngram_ratio(5, 10)
    assert ratio[5] == _dup_ngram_ratio(_WORD.findall(texts[5].lower()), 5) > 0.5
    assert np.all(ratio[[0, 1, 2, 3, 4, 6, 7, 8]] == 0)


def test_only_two_characters_lower_to_ascii_letters():
    assert needs_reference_ngrams("\u0130stanbul") and needs_reference_ngrams("5 \u212a")
    assert not needs_reference_ngrams("İ".lower()[0] + "plain")


def test_quality_reasons_equal_reference():
    from knowlm.data.clean import Blocklist, FilterConfig, clean_text, quality_reason
    from knowlm.data.vectorized import quality_reasons

    rng = random.Random(1)
    texts = [clean_text(t) or "x" for t in random_texts(rng, 300)]
    texts += ["Too short.", "Call 0123456789 0123456789 0123456789 now", "#### $$$$ %%%% &&&& **** Hello there friend",
              "buy now\nbuy now\nbuy now\nhello world\nbuy now", "click here to win big " * 10,
              "\u0130STANBUL and \u0130stanbul " * 5, "Marie Curie was born in Warsaw. Visit our online casino today.",
              "网络赌博" + "浙江大学位于杭州" * 3]
    plain = [t for t in texts if "\u0130" not in t]  # without it the blocklist runs once over the whole chunk
    for config in (FilterConfig(), FilterConfig(min_chars=5, max_dup_ngram_ratio=0.2, ngram_size=2, max_symbol_ratio=0.1)):
        block = Blocklist(config.terms())
        for chunk_texts in (texts, plain):
            got = quality_reasons(ChunkText.build(chunk_texts), config, block)
            assert got == [quality_reason(t, config, block) for t in chunk_texts]
            assert len(set(got)) >= 5


def test_token_offsets_from_the_vocabulary_equal_offset_tracking(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from knowlm.data.worker import piece_chars, tokenize

    backend = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir)).backend_tokenizer
    table = piece_chars(backend)
    assert table is not None and table.min() >= -1
    rng = random.Random(2)
    texts = [t.strip() or "x" for t in random_texts(rng, 200)] + ["<s> a special token inside.", "\u2581starts with it. Yes."]
    chunk = ChunkText.build(texts)
    offsets = chunk.boundaries(chunk.langs())
    fast = tokenize(backend, texts, offsets, table)
    tracked = tokenize(backend, texts, offsets, None)
    for a, b in zip(fast, tracked):
        assert a.tolist() == b.tolist()
    assert fast[0].tolist() == [i for e in backend.encode_batch(texts, add_special_tokens=False) for i in e.ids]
