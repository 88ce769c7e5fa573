"""Grounded decoding: constrained answers name only spans of their text."""

from __future__ import annotations

from knowlm.ie.grounding import SpanIndex, ValueTracker, candidate_spans


def test_candidate_spans_are_word_runs_of_the_text():
    spans = candidate_spans("Marie Curie was born in Warsaw. She met Pierre Curie.", max_words=3)
    assert {"Marie Curie", "Warsaw", "born in Warsaw", "Pierre Curie", "Curie", "Warsaw. She met"} <= spans
    assert "Warsaw." not in spans and "Marie Curie was born" not in spans  # no trailing punctuation; at most 3 words
    zh = candidate_spans("鲁迅出生于绍兴。1918年发表《狂人日记》", max_words=6)
    assert {"鲁迅", "绍兴", "1918年", "狂人日记", "出生于绍兴"} <= zh
    assert not any(s.startswith(("。", "《")) or s.endswith(("。", "》")) for s in zh)
    assert all(len(s) <= 5 for s in candidate_spans("Oppenheimer and Feynman met", max_chars=5))
    assert candidate_spans('He said "x\\y"') == {"He", "said", "He said", "x", "y"}  # no span holds a quote or backslash


def test_value_tracker_tells_values_from_keys():
    t = ValueTracker()
    t.feed(b'{"person": ["Mar')
    assert t.in_value and t.written == b"Mar"
    t.feed(b'ie Curie", "')
    assert t.in_value and t.written == b""  # the next array item
    t.feed(b'x"], "loc')
    assert not t.in_value  # a key
    r = ValueTracker()
    r.feed(b'{"spouse": [{"subject": "Pi')
    assert r.in_value and r.written == b"Pi"
    r.feed(b'erre", "object')
    assert not r.in_value
    r.feed(b'": "a\\"b')
    assert r.in_value and r.written == b'a\\"b'  # an escaped quote does not end the value


def test_span_index_allows_only_continuations_of_a_span():
    vocab = [b"", b"Mar", b"ie", b" Curie", b'"', b'", ', b"X", b"Marie", b'"]']
    index = SpanIndex(frozenset({"Marie Curie", "Marie"}))
    assert index.allowed(b"", vocab) == [1, 7]
    assert index.allowed(b"Mar", vocab) == [2]
    assert index.allowed(b"Marie", vocab) == [3, 4, 5, 8]  # continue, or close the whole span "Marie"
    assert index.allowed(b"Marie Curie", vocab) == [4, 5, 8]
    assert index.allowed(b"Marie C", vocab) == []


def test_grounded_constrained_decoding_names_only_spans_of_the_text(tiny_model):
    """A random model under the schema grammar alone writes strings that are nowhere in the text; with
    grounding every span it writes is a piece of the text (checked before the parser's own filter)."""
    from knowlm.decoding import DecodingParams
    from knowlm.ie import extract_texts
    from knowlm.infer import Generator

    model, tokenizer = tiny_model
    gen = Generator(model, tokenizer, "alpaca")
    texts = ["Marie Curie was born in Warsaw and moved to Paris.", "鲁迅出生于浙江绍兴，后来在北京大学任教。"]
    params = DecodingParams(max_new_tokens=96)

    def spans(ground: bool) -> list[tuple[str, str]]:
        out = []
        for task, schema in (("ner", ["person", "location"]), ("re", ["place of birth", "employer"])):
            for record in extract_texts(gen, texts, task, schema, lang="en", constrained=True, params=params,
                                        drop_hallucinated=False, ground=ground):
                assert record["parse_status"] == "ok", record
                out += [(record["text"], e["text"]) for e in record["entities"]]
                out += [(record["text"], v) for r in record["relations"] for v in (r["head"], r["tail"])]
        return out

    grounded = spans(True)
    assert grounded and all(span in text for text, span in grounded)
    assert any(span not in text for text, span in spans(False))
