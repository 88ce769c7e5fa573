"""Every prompt style reads back its own gold answer; realistic broken outputs still parse."""

import json

import pytest

from knowlm.ie import build_prompt, gold_output, parse_output
from knowlm.ie.parsing import ERRORS
from knowlm.models.templates import render

TEXT_ZH = "马云于1999年在杭州创办了阿里巴巴，浙江大学位于杭州。"
TEXT_EN = "Jack Ma founded Alibaba in Hangzhou in 1999. Zhejiang University is located in Hangzhou."
GOLD_ZH = {
    "id": "zh", "text": TEXT_ZH, "lang": "zh",
    "entities": [{"text": "马云", "type": "人物"}, {"text": "杭州", "type": "地点"}, {"text": "阿里巴巴", "type": "组织机构"}, {"text": "浙江大学", "type": "组织机构"}],
    "relations": [{"head": "马云", "relation": "创办", "tail": "阿里巴巴"}, {"head": "浙江大学", "relation": "位于", "tail": "杭州"}],
    "events": [{"trigger": "创办", "type": "组织成立", "arguments": [{"text": "马云", "role": "创始人"}, {"text": "阿里巴巴", "role": "组织"}, {"text": "1999年", "role": "时间"}]}],
}
GOLD_EN = {
    "id": "en", "text": TEXT_EN, "lang": "en",
    "entities": [{"text": "Jack Ma", "type": "person"}, {"text": "Hangzhou", "type": "location"}, {"text": "Alibaba", "type": "organization"}, {"text": "Zhejiang University", "type": "organization"}],
    "relations": [{"head": "Jack Ma", "relation": "founded", "tail": "Alibaba"}, {"head": "Zhejiang University", "relation": "located in", "tail": "Hangzhou"}],
    "events": [{"trigger": "founded", "type": "found", "arguments": [{"text": "Jack Ma", "role": "founder"}, {"text": "Alibaba", "role": "organization"}]}],
}
SCHEMAS = {
    "zh": {"ner": ["人物", "组织机构", "地点", "时间"], "re": ["创办", "位于", "父亲"],
           "ee": [{"event_type": "组织成立", "arguments": ["创始人", "组织", "时间", "地点"]}, {"event_type": "地震", "arguments": ["震级"]}]},
    "en": {"ner": ["person", "organization", "location"], "re": ["founded", "located in", "spouse"],
           "ee": [{"event_type": "found", "arguments": ["founder", "organization", "time"]}]},
}
FIELD = {"ner": "entities", "re": "relations", "ee": "events"}


def _canon(items, task):
    if task == "ner":
        return sorted((e["text"], e["type"]) for e in items)
    if task == "re":
        return sorted((r["head"], r["relation"], r["tail"]) for r in items)
    return sorted((e["trigger"], e["type"], tuple(sorted((a["text"], a["role"]) for a in e["arguments"]))) for e in items)


@pytest.mark.parametrize("style", ["json", "knowlm"])
@pytest.mark.parametrize("task", ["ner", "re", "ee"])
@pytest.mark.parametrize("gold", [GOLD_ZH, GOLD_EN], ids=["zh", "en"])
def test_style_round_trip(style, task, gold):
    schema = SCHEMAS[gold["lang"]][task]
    for variant in range(3):
        instruction, input_text = build_prompt(task, gold["text"], schema, style=style, lang=gold["lang"], variant=variant)
        prompt = render("alpaca", instruction, input_text)
        assert gold["text"] in prompt
        if style == "json":
            obj = json.loads(instruction)
            assert list(obj) == ["instruction", "schema", "input"] and obj["input"] == gold["text"] and input_text == ""
    answer = gold_output(task, gold, schema, style=style)
    if style == "json":
        names = [s["event_type"] if isinstance(s, dict) else s for s in schema]
        assert list(json.loads(answer)) == names
    parsed = parse_output(answer, task, schema, style=style, text=gold["text"])
    assert "parse_error" not in parsed, parsed
    assert _canon(parsed[FIELD[task]], task) == _canon(gold[FIELD[task]], task)


def test_gold_output_empty_and_nan():
    record = {"text": "x", "events": [{"trigger": "震", "type": "地震", "arguments": []}]}
    out = json.loads(gold_output("ee", record, [{"event_type": "地震", "arguments": ["震级", "时间"]}, {"event_type": "火灾", "arguments": []}]))
    assert out == {"地震": [{"trigger": "震", "arguments": {"震级": "NAN", "时间": "NAN"}}], "火灾": []}
    assert gold_output("ner", {"text": "x"}, ["人物"], style="knowlm", lang="zh") == "无"


S = ["人物", "地点", "组织机构"]
T = "马云在杭州创办了阿里巴巴。"
BROKEN = [
    # (name, output, task, schema, expected tuples, expected error, expected note)
    ("echo then answer", '{"instruction": "你是专门进行实体抽取的专家。", "schema": ["人物", "地点", "组织机构"], "input": "马云在杭州创办了阿里巴巴。"}\n{"人物": ["马云"], "地点": ["杭州"], "组织机构": ["阿里巴巴"]}', "ner", S, 3, None, "prompt_echo"),
    ("trailing chatter", '{"人物": ["马云"], "地点": ["杭州"], "组织机构": []}\n以上就是抽取的所有实体，希望对你有帮助！', "ner", S, 2, None, "trailing_text"),
    ("leading chatter", 'Sure! Here are the entities:\n```json\n{"人物": ["马云"], "地点": [], "组织机构": []}\n```', "ner", S, 1, None, "leading_text"),
    ("repeated json", '{"人物": ["马云"], "地点": [], "组织机构": []}{"人物": ["马云"], "地点": [], "组织机构": []}{"人物": ["马云"], "地点": [], "组织机', "ner", S, 1, None, "repeated_json"),
    ("truncated in string", '{"人物": ["马云"], "地点": ["杭', "ner", S, 1, None, "repaired_truncated"),
    ("truncated after key", '{"人物": ["马云"], "地点": ["杭州"], "组织机构"', "ner", S, 2, None, "repaired_truncated"),
    ("truncated mid relation", '{"创办": [{"subject": "马云", "object": "阿里巴巴"}, {"subject": "马', "re", ["创办"], 1, None, "repaired_truncated"),
    ("chinese punctuation", '{“人物”：[“马云”]，“地点”：[“杭州”]，“组织机构”：[]}', "ner", S, 2, None, "repaired_punctuation"),
    ("python literal", "{'人物': ['马云'], '地点': [], '组织机构': ['阿里巴巴']}", "ner", S, 2, None, "python_literal"),
    ("trailing comma", '{"人物": ["马云",], "地点": [], "组织机构": [],}', "ner", S, 1, None, "trailing_comma"),
    ("wrong keys", '{"person": ["Jack Ma"], "place": ["Hangzhou"]}', "ner", S, 0, "wrong_keys", None),
    ("some unknown keys", '{"人物": ["马云"], "公司": ["阿里巴巴"]}', "ner", S, 1, None, "unknown_keys:1"),
    ("head/tail fields", '{"创办": [{"head": "马云", "tail": "阿里巴巴"}]}', "re", ["创办"], 1, None, "fields:head/tail"),
    ("NAN and empty values", '{"人物": "NAN", "地点": "", "组织机构": ["阿里巴巴", "nan"]}', "ner", S, 1, None, None),
    ("hallucinated span", '{"人物": ["马化腾", "马云"], "地点": [], "组织机构": []}', "ner", S, 1, None, "dropped_hallucinated:1"),
    ("no json at all", "对不起，我无法完成这个任务。", "ner", S, 0, "no_json", None),
    ("empty", "   ", "ner", S, 0, "empty", None),
    ("list not object", '[1, 2, 3]', "ner", S, 0, "no_json", None),
    ("flat list of triples", '[{"subject": "马云", "relation": "创办", "object": "阿里巴巴"}]', "re", ["创办"], 1, None, "flat_list"),
    ("bad values", '{"创办": ["马云创办阿里巴巴"]}', "re", ["创办"], 0, "bad_values", None),
    ("tuples in json mode", "(马云,人物)\n(杭州,地点)", "ner", S, 2, None, "free_text_answer"),
    ("ee args as list", '{"成立": [{"trigger": "创办", "arguments": [{"role": "创始人", "argument": "马云"}]}]}', "ee", [{"event_type": "成立", "arguments": ["创始人"]}], 1, None, None),
    ("ee unknown role", '{"成立": [{"trigger": "创办", "arguments": {"创始人": "马云", "老板": "马云"}}]}', "ee", [{"event_type": "成立", "arguments": ["创始人"]}], 1, None, "unknown_role"),
    ("unicode escape keys", '{"\\u4eba\\u7269": ["\\u9a6c\\u4e91"]}', "ner", S, 1, None, None),
    ("not a string", None, "ner", S, 0, "empty", None),
]


@pytest.mark.parametrize("case", BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_outputs(case):
    _, output, task, schema, n, error, note = case
    parsed = parse_output(output, task, schema, style="json", text=T)
    items = parsed[FIELD[task]]
    assert len(items) == n, parsed
    assert parsed.get("parse_error") == error, parsed
    if error:
        assert error in ERRORS
    if note:
        assert note in parsed["parse_notes"], parsed


FREE = [
    ("chinese comma and paren", "（马云，人物）\n（杭州，地点）", "ner", S, 2, None),
    ("unknown type dropped", "(马云,人物)\n(杭州,城市)", "ner", S, 1, None),
    ("only unknown types", "(马云,老板)", "ner", S, 0, "unknown_type"),
    ("none answer", "无。", "ner", S, 0, None),
    ("prompt echo of format", "请按照 (头实体,关系,尾实体) 的格式回答\n(马云,创办,阿里巴巴)", "re", ["创办"], 1, None),
    ("entity with comma", "(Alibaba, Inc.,organization)", "ner", ["organization"], 1, None),
    ("no tuples", "马云是人物", "ner", S, 0, "no_tuples"),
    ("json in knowlm mode", '{"人物": ["马云"]}', "ner", S, 1, None),
    ("ee without args", "(创办,成立,[])", "ee", [{"event_type": "成立", "arguments": ["创始人"]}], 1, None),
]


@pytest.mark.parametrize("case", FREE, ids=[c[0] for c in FREE])
def test_free_text_outputs(case):
    _, output, task, schema, n, error = case
    parsed = parse_output(output, task, schema, style="knowlm", text=T + " Alibaba, Inc.")
    assert len(parsed[FIELD[task]]) == n, parsed
    assert parsed.get("parse_error") == error, parsed


def test_parse_never_raises_on_garbage():
    import random

    rng = random.Random(0)
    alphabet = '{}[]",:()（），“”NAN人物地点\\ \n\'abc'
    for _ in range(300):
        out = "".join(rng.choice(alphabet) for _ in range(rng.randrange(60)))
        for task, schema in (("ner", S), ("re", ["创办"]), ("ee", [{"event_type": "成立", "arguments": ["创始人"]}])):
            for style in ("json", "knowlm"):
                result = parse_output(out, task, schema, style=style, text=T)
                assert isinstance(result[FIELD[task]], list)
                # a reason the parsers chose, never the safety net for a parser that raised
                assert result.get("parse_error") in (None, *(e for e in ERRORS if e != "internal")), (out, result)


def test_a_parser_that_raises_is_reported_not_raised(monkeypatch):
    """The contract "never raises on model output" holds even for a bug: the record says so."""
    import knowlm.ie.parsing as parsing

    def broken(*args, **kwargs):
        raise ValueError("parser bug")

    monkeypatch.setattr(parsing, "find_json", broken)
    assert parse_output('{"人物": ["马云"]}', "ner", S, text=T) == {"entities": [], "parse_error": "internal", "parse_notes": ["ValueError: parser bug"]}


def test_offsets_added():
    parsed = parse_output('{"地点": ["杭州"]}', "ner", ["地点"], text=T)
    assert parsed["entities"] == [{"text": "杭州", "type": "地点", "start": 3, "end": 5}]
