"""Sentence splitting: zh/en/mixed edge cases and the lossless-join contract."""

import random

import pytest

from knowlm.data import detect_lang, split_sentences


def check(text, expected, lang="auto"):
    got = split_sentences(text, lang)
    assert "".join(got) == text
    assert got == expected


def test_english_abbreviations_do_not_split():
    check(
        "Dr. Curie won the Nobel Prize. The U.S. has many universities, e.g. Harvard. Mr. Smith left.",
        ["Dr. Curie won the Nobel Prize. ", "The U.S. has many universities, e.g. Harvard. ", "Mr. Smith left."],
    )


def test_english_initials_decimals_and_lowercase_continuations():
    check("J. K. Rowling wrote 7 books. It cost 3.5 dollars.", ["J. K. Rowling wrote 7 books. ", "It cost 3.5 dollars."])
    check('"Really?" she asked. Yes! Of course.', ['"Really?" she asked. ', "Yes! ", "Of course."])
    check("It ran until 5 p.m. the next day.", ["It ran until 5 p.m. the next day."])


def test_chinese_terminators_and_closing_quotes():
    check(
        "他说：“你好。”然后走了！真的吗？是的……好；再见。",
        ["他说：“你好。”", "然后走了！", "真的吗？", "是的……", "好；", "再见。"],
    )
    check("浙江大学（位于杭州。）成立于1897年。", ["浙江大学（位于杭州。）", "成立于1897年。"])


def test_mixed_text_and_newlines():
    check("Hello world.你好世界。OK! Next line\nsecond line", ["Hello world.", "你好世界。", "OK! ", "Next line\n", "second line"])
    check("第一行\n\n第二行!然后", ["第一行\n\n", "第二行!", "然后"], lang="zh")
    check("  leading. Trailing   ", ["  leading. ", "Trailing   "])


def test_lossless_on_random_text():
    rng = random.Random(0)
    alphabet = list("abc XYZ.!?。！？；…”」）\n\t 1.2 Dr. U.S. 中文") + ["e.g. ", "。”", "\r\n"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        for lang in ("auto", "zh", "en"):
            parts = split_sentences(text, lang)
            assert "".join(parts) == text
            assert all(parts)


def test_empty_and_bad_lang():
    assert split_sentences("") == []
    with pytest.raises(ValueError):
        split_sentences("x", lang="fr")


def test_detect_lang():
    assert detect_lang("浙江大学是一所位于杭州的大学，Harvard 也是。") == "zh"
    assert detect_lang("Zhejiang University (浙江大学) is in Hangzhou, a city in China.") == "en"
    assert detect_lang("") == "en"
