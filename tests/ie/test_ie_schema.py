"""Schema forms, batching remainder rule, negative sampling and instruction data determinism."""

import json
import subprocess
import sys

import pytest

from knowlm.errors import KnowlmError
from knowlm.ie import batch_schema, make_schema, records_to_instructions
from knowlm.ie.schema import EventType, load_schema


def test_batching_remainder_rule():
    assert batch_schema(list(range(13)), 6) == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11, 12]]  # 1 < 3 joins
    assert batch_schema(list(range(15)), 6) == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11], [12, 13, 14]]  # 3 stays
    assert batch_schema(list(range(9)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7, 8]]
    assert batch_schema(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batch_schema(list(range(5)), 1) == [[0], [1], [2], [3], [4]]
    assert batch_schema(["b", "a"], 0) == [["b", "a"]] and batch_schema([], 4) == []
    assert batch_schema(list(range(3)), 4) == [[0, 1, 2]]


def test_batching_is_independent_of_hash_seed():
    code = (
        "import json; from knowlm.ie import records_to_instructions as r;"
        "recs=[{'id':str(i),'text':'浙江大学位于杭州','relations':[{'head':'浙江大学','relation':'位于','tail':'杭州'}]} for i in range(3)];"
        "print(json.dumps(list(r(recs,'re',['位于','创办','父亲','母亲','出生地','国籍'],seed=7)),ensure_ascii=False))"
    )
    outs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONHASHSEED": seed}, check=True).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1


def test_schema_forms():
    assert make_schema("ner", {"person": "a human", "location": "a place"}).descriptions["person"] == "a human"
    assert make_schema("re", "located in, founded by").names() == ["located in", "founded by"]
    assert make_schema("re", [{"relation": "born in", "head_type": "person", "tail_type": "place"}]).head_tail_types["born in"] == ("person", "place")
    ee = make_schema("ee", [{"event_type": "地震", "trigger": True, "arguments": ["震级", "时间"]}])
    assert ee.items == [EventType("地震", ("震级", "时间"))]
    assert make_schema("ner", ["a", "b", "a"]).names() == ["a", "b"]
    with pytest.raises(KnowlmError):
        make_schema("ner", [])
    with pytest.raises(KnowlmError):
        make_schema("xx", ["a"])
    with pytest.raises(KnowlmError):
        make_schema("ee", [{"arguments": ["x"]}])


def test_load_schema_file(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(["人物", "地点"], ensure_ascii=False), encoding="utf-8")
    assert load_schema("ner", str(path)).names() == ["人物", "地点"]
    with pytest.raises(KnowlmError, match="not found"):
        load_schema("ner", str(tmp_path / "missing.json"))


def test_instructions_negatives_and_determinism():
    records = [
        {"id": f"r{i}", "text": "Marie Curie was born in Warsaw.",
         "relations": [{"head": "Marie Curie", "relation": "born in", "tail": "Warsaw"}]}
        for i in range(20)
    ]
    schema = ["born in", "died in", "spouse", "employer", "founded", "citizen of", "member of", "located in"]
    first = list(records_to_instructions(records, "re", schema, neg_ratio=2, seed=3, split_num=4))
    again = list(records_to_instructions(records, "re", schema, neg_ratio=2, seed=3, split_num=4))
    assert first == again
    for item in first:
        assert set(item) >= {"instruction", "input", "output"}
        prompt = json.loads(item["instruction"])
        assert "born in" in prompt["schema"] and len(prompt["schema"]) == 3  # 1 positive + 2 negatives
        answer = json.loads(item["output"])
        assert list(answer) == prompt["schema"]  # keys in schema order
        assert answer["born in"] == [{"subject": "Marie Curie", "object": "Warsaw"}]
        assert all(answer[k] == [] for k in answer if k != "born in")
    # different records draw different negatives; a different seed changes the draw
    assert len({tuple(json.loads(i["instruction"])["schema"]) for i in first}) > 1
    other = list(records_to_instructions(records, "re", schema, neg_ratio=2, seed=4, split_num=4))
    assert other != first
    # hard negatives: confusable types come first
    hard = list(records_to_instructions(records[:3], "re", schema, neg_ratio=1, seed=0, hard_groups=[["born in", "died in"]]))
    assert all(json.loads(i["instruction"])["schema"] == ["born in", "died in"] for i in hard)
    # neg_ratio=None asks about the whole schema, batched
    full = list(records_to_instructions(records[:1], "re", schema, neg_ratio=None, split_num=4, style="knowlm", lang="en"))
    assert len(full) == 2 and full[0]["input"] == records[0]["text"]
    assert full[0]["output"] == "(Marie Curie,born in,Warsaw)" and full[1]["output"] == "None"
