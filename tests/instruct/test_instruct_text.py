"""Tokens, ROUGE-L, the ROUGE-L index and MTLD, checked against hand-computed values and brute force."""

from __future__ import annotations

import random

import pytest

from knowlm.instruct.mtld import mtld, mtld_pass
from knowlm.instruct.rouge_index import RougeIndex, document_frequencies
from knowlm.instruct.text import language_of, lcs_length, lcs_length_dp, record_text, rouge_l, tokenize


def test_tokenize_splits_chinese_characters_and_english_words():
    assert tokenize("Hello, 浙江大学! It's 2023.") == ["hello", "浙", "江", "大", "学", "it", "s", "2023"]
    assert tokenize("") == []


def test_rouge_l_by_hand():
    # LCS("the cat sat on the mat", "the cat lay on the mat") = "the cat on the mat" = 5; F1 = 2*5/(6+6)
    assert rouge_l("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(10 / 12)
    # Chinese counts characters: LCS = 8 of 8 and 9 characters
    assert rouge_l("浙江大学位于杭州", "浙江大学位于杭州市") == pytest.approx(16 / 17)
    assert rouge_l("abc def", "xyz") == 0.0
    assert rouge_l("", "anything") == 0.0


def test_bit_parallel_lcs_matches_dynamic_programming():
    rng = random.Random(0)
    for _ in range(500):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 70))]
        b = [rng.choice("abcdef") for _ in range(rng.randint(0, 70))]
        assert lcs_length(a, b) == lcs_length_dp(a, b)


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.9])
def test_rouge_index_keeps_exactly_what_all_pairs_keeps(threshold):
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(200)]
    docs: list[list[str]] = []
    for _ in range(400):
        if docs and rng.random() < 0.5:  # a perturbed copy of an earlier item
            doc = list(rng.choice(docs))
            for _ in range(rng.randint(0, 3)):
                if doc and rng.random() < 0.5:
                    doc.pop(rng.randrange(len(doc)))
                else:
                    doc.insert(rng.randrange(len(doc) + 1), rng.choice(vocab))
        else:
            doc = [rng.choice(vocab) for _ in range(rng.randint(1, 30))]
        docs.append(doc)
    kept_brute: list[list[str]] = []
    expected = []
    for doc in docs:
        novel = all(rouge_l(doc, other) < threshold for other in kept_brute)
        expected.append(novel)
        if novel:
            kept_brute.append(doc)
    index = RougeIndex(threshold, document_frequencies(docs))
    got = [index.add_if_novel(doc)[0] for doc in docs]
    assert got == expected
    assert index.comparisons < len(docs) * len(kept_brute) / 4  # far fewer than all pairs


def test_mtld_by_hand():
    # forward "a a b c": TTR hits 1/2 <= 0.72 at the 2nd token (1 factor); "b c" has TTR 1 -> +0 -> 4/1 = 4
    assert mtld_pass(["a", "a", "b", "c"]) == pytest.approx(4.0)
    # backward "c b a a": TTR ends at 3/4 = 0.75 -> partial factor (1-0.75)/(1-0.72) -> 4 / 0.892857 = 4.48
    assert mtld_pass(["c", "b", "a", "a"]) == pytest.approx(4.48)
    assert mtld(["a", "a", "b", "c"]) == pytest.approx((4.0 + 4.48) / 2)
    assert mtld([]) == 0.0
    assert mtld(["x", "y"] * 20) < 5.0 < mtld(tokenize("The quick brown fox jumps over the lazy dog while a cat watches"))


def test_language_and_record_text():
    assert language_of("浙江大学位于杭州。") == "zh"
    assert language_of("Hangzhou is a city.") == "en"
    assert language_of("Привет, как дела?") == "other"
    assert language_of("123 !!") == "none"
    record = {"instruction": "Translate", "input": "你好", "output": "Hello"}
    assert record_text(record) == "Translate\n你好\nHello"
    assert record_text(record, "prompt") == "Translate\n你好"
    assert record_text(record, "output") == "Hello"
