"""Cleaning, each quality filter, and both de-duplication modes."""

import numpy as np

from knowlm.data.clean import Blocklist, FilterConfig, clean_text, quality_reason
from knowlm.data.dedup import DedupConfig, Deduplicator, exact_key, minhash_signature

GOOD_EN = "Marie Curie was born in Warsaw in 1867. She studied physics at the University of Paris and won two Nobel Prizes."
GOOD_ZH = "浙江大学是一所位于浙江省杭州市的公立研究型大学，前身是创立于1897年的求是书院，现有七个校区。"


def reason(text, **overrides):
    config = FilterConfig(**overrides)
    return quality_reason(clean_text(text), config, Blocklist(config.terms()))


def test_clean_text_normalises_and_removes_controls():
    assert clean_text("Cafe\u0301\x00 ok\u200b\r\nnext  \n\n\n\nend\x7f") == "Caf\u00e9 ok\nnext\n\nend"
    assert clean_text("全角，标点！") == "全角，标点！"  # NFC keeps Chinese full-width punctuation
    assert clean_text("ｆｕｌｌ", normalization="NFKC") == "full"


def test_good_documents_pass():
    assert reason(GOOD_EN) is None
    assert reason(GOOD_ZH) is None


def test_each_filter_has_its_reason():
    assert reason("Too short.") == "too_short"
    assert reason("Call 0123456789 0123456789 0123456789 now") == "too_many_digits"
    assert reason("#### $$$$ %%%% &&&& **** Hello there friend") == "too_many_symbols"
    assert reason("buy now\nbuy now\nbuy now\nhello world\nbuy now") == "repeated_lines"
    assert reason("click here to win big " * 10) == "repeated_ngrams"
    assert reason(GOOD_EN + " Visit our online casino today.") == "blocklisted"
    assert reason(GOOD_ZH + "这里有网络赌博。") == "blocklisted"


def test_thresholds_are_configurable():
    assert reason("Too short.", min_chars=5) is None
    assert reason("click here to win big " * 10, max_dup_ngram_ratio=1.0) is None
    assert reason(GOOD_EN + " Visit our online casino today.", max_blocked_terms=1) is None
    assert reason(GOOD_EN + " A classic example.", blocklist=["classic"]) == "blocklisted"


def test_blocklist_matches_whole_latin_words_only():
    block = Blocklist(["ass", "赌博"])
    assert block.count("a classic class") == 0
    assert block.count("you ass!") == 1
    assert block.count("网络赌博和赌博") == 2


def test_exact_dedup_ignores_case_and_whitespace():
    dedup = Deduplicator(DedupConfig("exact"))
    assert not dedup.is_duplicate(exact_key("Hello  World.\nSecond line."))
    assert dedup.is_duplicate(exact_key("hello world. second line."))
    assert not dedup.is_duplicate(exact_key("hello world, second line."))


def test_minhash_dedup_finds_near_duplicates():
    base = " ".join(f"word{i}" for i in range(200))
    near = base.replace("word100", "changed").replace("word150", "other")
    different = " ".join(f"term{i}" for i in range(200))
    dedup = Deduplicator(DedupConfig("minhash", threshold=0.8))
    assert not dedup.is_duplicate(minhash_signature(base))
    assert dedup.is_duplicate(minhash_signature(near))
    assert not dedup.is_duplicate(minhash_signature(different))
    exact = Deduplicator(DedupConfig("exact"))
    assert not exact.is_duplicate(exact_key(base)) and not exact.is_duplicate(exact_key(near))


def test_dedup_state_can_be_rebuilt_from_kept_keys():
    sigs = [minhash_signature(f"document number {i} " + "shared tail words " * (i + 3)) for i in range(5)]
    first = Deduplicator(DedupConfig("minhash"))
    kept = [s for s in sigs if not first.is_duplicate(s)]
    replay = Deduplicator(DedupConfig("minhash"))
    for s in kept:
        replay.add(np.asarray(s))
    probe = minhash_signature("document number 4 " + "shared tail words " * 7)
    assert first.is_duplicate(probe) == replay.is_duplicate(probe)
