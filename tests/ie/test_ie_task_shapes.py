"""EET, EEA and SPO end to end without a model: prompts -> answers -> extract_texts -> score,
SFT data for them, and their constrained-decoding answer shapes."""

import json

from scripted_generator import ScriptedGenerator

from knowlm.ie import extract_texts, gold_output, records_to_instructions, score
from knowlm.ie.constrained import json_schema

GOLD = [
    {"id": "1", "text": "消失的“外企光环”，5月份在华裁员900余人", "lang": "zh",
     "events": [{"trigger": "裁员", "type": "组织关系-裁员", "arguments": [{"text": "5月份", "role": "时间"}, {"text": "900余人", "role": "裁员人数"}]}],
     "relations": []},
    {"id": "2", "text": "《邪少兵王》是冰火未央写的网络小说", "lang": "zh", "events": [],
     "relations": [{"head": "邪少兵王", "relation": "作者", "tail": "冰火未央", "head_type": "图书作品", "tail_type": "人物"}]},
]
SCHEMAS = {
    "eet": ["组织关系-裁员", "人生-婚礼"],
    "eea": [{"event_type": "组织关系-裁员", "arguments": ["时间", "裁员人数", "裁员方"]}],
    "spo": [{"subject_type": "图书作品", "predicate": "作者", "object_type": "人物"}, {"subject_type": "人物", "predicate": "国籍", "object_type": "国家"}],
}


def _gold_answers(task):
    """A scripted generator answering each prompt with the gold answer for its text and schema batch (json style)."""
    def script(request):
        gold = next((g for g in GOLD if g["text"] == request["input"]), {"text": request["input"]})
        return gold_output(task, gold, request["schema"])

    return ScriptedGenerator(script)


def test_extract_and_score_new_task_shapes():
    for task, schema in SCHEMAS.items():
        records = extract_texts(_gold_answers(task), [{"id": g["id"], "text": g["text"]} for g in GOLD], task, schema)
        assert all(r["task"] == task and r["parse_status"] == "ok" for r in records)
        gold = [{**g, "task": task} for g in GOLD]
        report = score(gold, records)
        measure = {"eet": "event_trigger", "eea": "event_argument", "spo": "relation"}[task]
        assert report[measure]["f1"] == 1.0 and report[measure]["n_gold"] >= 1, (task, report[measure])
        assert list(report["per_task"]) == [task.upper()]


def test_sft_data_for_new_task_shapes():
    eea = list(records_to_instructions(GOLD, "eea", SCHEMAS["eea"], split_num=4, seed=0))
    assert len(eea) == 1  # EEA asks only about texts with events, naming their triggers (IEPile's recipe)
    prompt = json.loads(eea[0]["instruction"])
    assert prompt["schema"] == [{"event_type": "组织关系-裁员", "trigger": ["裁员"], "arguments": ["时间", "裁员人数", "裁员方"]}]
    assert json.loads(eea[0]["output"]) == {"组织关系-裁员": [{"时间": "5月份", "裁员人数": "900余人", "裁员方": "NAN"}]}
    spo = list(records_to_instructions(GOLD, "spo", SCHEMAS["spo"], neg_ratio=None, seed=0))
    answers = [json.loads(x["output"]) for x in spo]
    assert {"作者": [{"subject": "邪少兵王", "object": "冰火未央"}], "国籍": []} in answers
    eet = list(records_to_instructions(GOLD, "eet", SCHEMAS["eet"], neg_ratio=None, seed=0, style="knowlm"))
    assert eet[0]["output"] == "(裁员,组织关系-裁员)"


def test_constrained_answer_shapes_for_new_tasks():
    eet = json_schema("eet", SCHEMAS["eet"])
    # the answer's keys in schema order; only the first is required (the answer may close after any key)
    assert list(eet["properties"]) == SCHEMAS["eet"] and eet["required"] == SCHEMAS["eet"][:1]
    assert eet["properties"]["人生-婚礼"]["items"]["type"] == "string"
    eea = json_schema("eea", SCHEMAS["eea"])["properties"]["组织关系-裁员"]["items"]
    assert eea["required"] == ["时间", "裁员人数", "裁员方"] and "trigger" not in eea["properties"]
    spo = json_schema("spo", SCHEMAS["spo"])
    assert list(spo["properties"]) == ["作者", "国籍"] and spo["required"] == ["作者"] and spo["properties"]["作者"]["items"]["required"] == ["subject", "object"]
