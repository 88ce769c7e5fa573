"""Each converter on a small hand-written sample in the dataset's original format."""

import json

import pytest

from knowlm.errors import KnowlmError
from knowlm.ie.datasets import ConvertReport, convert, schema_from_records

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
to TO B-VP O
boycott VB I-VP O
British JJ B-NP B-MISC
lamb NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP I-LOC
1996-08-22 CD I-NP O
"""

PEOPLES_DAILY = """海 O
钓 O
比 O
赛 O
地 O
点 O
在 O
厦 B-LOC
门 I-LOC
与 O
金 B-LOC
门 I-LOC
之 O
间 O
。 O

周 B-PER
恩 I-PER
来 I-PER
总 O
理 O
"""

SCIERC = {
    "doc_key": "J87-3001",
    "sentences": [["We", "propose", "a", "parser", "for", "English", "."], ["The", "parser", "uses", "a", "grammar", "."]],
    "ner": [[[3, 3, "Method"], [5, 5, "Material"]], [[8, 8, "Generic"], [11, 11, "Method"]]],
    "relations": [[[3, 3, 5, 5, "USED-FOR"]], [[11, 11, 8, 8, "USED-FOR"]]],
    "clusters": [],
}

NYT11 = {
    "sentText": "\"But that spasm of irritation by a master intimidator was minor compared with what Bobby Fischer , the erratic former world chess champion , dished out in March at a news conference in Reykjavik , Iceland .\"\r\n",
    "articleId": "/m/vinci8/data1/riedel/projects/relation/kb/nyt1/docstore/nyt-2005-2006.backup/1677367.xml.pb",
    "sentId": 1,
    "relationMentions": [
        {"em1Text": "Bobby Fischer", "em2Text": "Iceland", "label": "/people/person/nationality"},
        {"em1Text": "Iceland", "em2Text": "Reykjavik", "label": "/location/location/contains"},
        {"em1Text": "Bobby Fischer", "em2Text": "Reykjavik", "label": "None"},
    ],
    "entityMentions": [{"start": 0, "label": "PERSON", "text": "Bobby Fischer"}, {"start": 1, "label": "LOCATION", "text": "Reykjavik"},
                       {"start": 2, "label": "LOCATION", "text": "Iceland"}],
}

KBP37 = """1\t" <e1> Thom Yorke </e1> of <e2> Radiohead </e2> has included the + for many of his signature distortion sounds . "
per:employee_of(e1,e2)

2\t" <e1> Leland Stanford </e1> founded <e2> Stanford University </e2> in 1885 . "
org:founded_by(e2,e1)

3\t" <e1> Apple </e1> and <e2> Google </e2> compete . "
no_relation

4\t" a sentence without tags "
per:title(e1,e2)

"""

GIDS = [
    {"sub": "james_smurthwaite", "obj": "north_ormesby", "sub_id": "/m/0x", "obj_id": "/m/0y",
     "sent": ["Private Alfred James_Smurthwaite Sample , son of Edward , of North_Ormesby , Yorkshire .",
              "James_Smurthwaite died in North_Ormesby ."],
     "rel": "/people/deceased_person/place_of_death"},
    {"sub": "barack_obama", "obj": "chicago", "sent": ["Barack_Obama gave a speech ."], "rel": "NA"},
    {"relation": "/people/person/place_of_birth", "text": "Marie Curie was born in Warsaw .",
     "head": {"word": "Marie Curie", "id": "/m/1"}, "tail": {"word": "Warsaw", "id": "/m/2"}},
]

DUIE = [
    {"text": "《离开》是由张宇谱曲，演唱", "spo_list": [
        {"predicate": "作曲", "object_type": {"@value": "人物"}, "subject_type": "歌曲", "object": {"@value": "张宇"}, "subject": "离开"},
        {"predicate": "歌手", "object_type": {"@value": "人物"}, "subject_type": "歌曲", "object": {"@value": "张宇"}, "subject": "离开"}]},
    {"text": "周星驰凭借《喜剧之王》获得金像奖", "spo_list": [
        {"predicate": "获奖", "object_type": {"@value": "奖项", "inWork": "影视作品"}, "subject_type": "娱乐人物",
         "object": {"@value": "金像奖", "inWork": "喜剧之王"}, "subject": "周星驰"}]},
]

DUEE = [
    {"text": "雀巢裁员4000人：时代抛弃你时，连招呼都不会打！", "id": "409389c96efe78d6af1c86e0450fd2d7",
     "event_list": [{"event_type": "组织关系-裁员", "trigger": "裁员", "trigger_start_index": 2,
                     "arguments": [{"argument_start_index": 0, "role": "裁员方", "argument": "雀巢", "alias": []},
                                   {"argument_start_index": 4, "role": "裁员人数", "argument": "4000人", "alias": []}],
                     "class": "组织关系"}]},
]

IEPILE = [
    {"task": "NER", "source": "CoNLL2003",
     "instruction": json.dumps({"instruction": "You are an expert in named entity recognition. Please extract entities that match the schema definition from the input. Return an empty list if the entity type does not exist. Please respond in the format of a JSON string.",
                                "schema": ["person", "organization", "else", "location"], "input": "284 Robert Allenby ( Australia ) 69 71 71 73 , Miguel Angel Martin ( Spain ) 75 70 71 68 ( Allenby won at first play-off hole )"}),
     "output": json.dumps({"person": ["Robert Allenby", "Allenby", "Miguel Angel Martin"], "organization": [], "else": [], "location": ["Australia", "Spain"]})},
    {"task": "RE", "source": "DuIE2.0",
     "instruction": json.dumps({"instruction": "你是专门进行关系抽取的专家。请从input中抽取出符合schema定义的关系三元组，不存在的关系返回空列表。请按照JSON字符串的格式回答。",
                                "schema": ["作曲", "歌手", "父亲", "母亲"], "input": "《离开》是由张宇谱曲，演唱"}, ensure_ascii=False),
     "output": json.dumps({"作曲": [{"subject": "离开", "object": "张宇"}], "歌手": [{"subject": "离开", "object": "张宇"}], "父亲": [], "母亲": []}, ensure_ascii=False)},
    {"task": "RE", "source": "DuIE2.0",
     "instruction": json.dumps({"instruction": "...", "schema": ["作词", "所属专辑"], "input": "《离开》是由张宇谱曲，演唱"}, ensure_ascii=False),
     "output": json.dumps({"作词": [], "所属专辑": []}, ensure_ascii=False)},
    {"task": "EE", "source": "DuEE1.0",
     "instruction": json.dumps({"instruction": "你是专门进行事件提取的专家。", "schema": [{"event_type": "组织关系-裁员", "trigger": True, "arguments": ["裁员方", "裁员人数", "时间"]}],
                                "input": "雀巢裁员4000人"}, ensure_ascii=False),
     "output": json.dumps({"组织关系-裁员": [{"trigger": "裁员", "arguments": {"裁员方": "雀巢", "裁员人数": "4000人", "时间": "NAN"}}]}, ensure_ascii=False)},
    {"task": "XX", "instruction": "{}", "output": "{}"},
    {"task": "NER", "instruction": "not json", "output": "{}"},
]


def _write(path, content):
    if isinstance(content, list):
        content = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in content)
    path.write_text(content, encoding="utf-8")
    return path


def test_conll2003(tmp_path):
    records, report = convert("conll2003", _write(tmp_path / "train.txt", CONLL))
    assert len(records) == 3 and report.skipped["docstart"] == 2
    first = records[0]
    assert first["text"] == "EU rejects German call to boycott British lamb ."
    assert [(e["text"], e["type"]) for e in first["entities"]] == [("EU", "ORG"), ("German", "MISC"), ("British", "MISC")]
    assert all(first["text"][e["start"] : e["end"]] == e["text"] for e in first["entities"])
    assert records[1]["entities"] == [{"text": "Peter Blackburn", "type": "PER", "start": 0, "end": 15}]
    assert records[2]["entities"][0]["text"] == "BRUSSELS"  # IOB1: I- may open an entity


def test_peoples_daily(tmp_path):
    records, _ = convert("peoples-daily", _write(tmp_path / "pd.txt", PEOPLES_DAILY))
    assert records[0]["text"] == "海钓比赛地点在厦门与金门之间。" and records[0]["lang"] == "zh"
    assert [(e["text"], e["start"]) for e in records[0]["entities"]] == [("厦门", 7), ("金门", 10)]
    assert records[1]["entities"] == [{"text": "周恩来", "type": "PER", "start": 0, "end": 3}]


def test_scierc(tmp_path):
    records, _ = convert("scierc", _write(tmp_path / "s.json", [SCIERC]))
    assert len(records) == 2
    assert records[0]["relations"] == [{"head": "parser", "relation": "USED-FOR", "tail": "English", "head_type": "Method", "tail_type": "Material"}]
    # second sentence: document-level token indices 8..11 map into sentence 2
    assert [(e["text"], e["type"]) for e in records[1]["entities"]] == [("parser", "Generic"), ("grammar", "Method")]
    assert records[1]["relations"][0]["head"] == "grammar" and records[1]["relations"][0]["tail"] == "parser"


def test_nyt11(tmp_path):
    records, report = convert("nyt11", _write(tmp_path / "nyt.json", [NYT11]))
    r = records[0]
    assert r["text"].startswith("But that spasm") and r["text"].endswith("Iceland .")
    assert {(x["head"], x["relation"], x["tail"]) for x in r["relations"]} == {
        ("Bobby Fischer", "/people/person/nationality", "Iceland"), ("Iceland", "/location/location/contains", "Reykjavik")}
    assert report.dropped["na_relation"] == 1 and not report.skipped  # the NA mention, not the sentence
    assert r["relations"][0]["head_type"] == "PERSON"
    assert "skipped nothing; left out of written records: na_relation: 1" in report.summary()


def test_kbp37(tmp_path):
    records, report = convert("kbp37", _write(tmp_path / "kbp.txt", KBP37))
    assert records[0]["text"] == "Thom Yorke of Radiohead has included the + for many of his signature distortion sounds ."
    assert records[0]["relations"] == [{"head": "Thom Yorke", "relation": "per:employee_of", "tail": "Radiohead"}]
    assert records[1]["relations"] == [{"head": "Stanford University", "relation": "org:founded_by", "tail": "Leland Stanford"}]
    assert records[2]["relations"] == [] and report.skipped == {"no_entity_tags": 1} and report.negatives == 1
    assert report.read == 4 and len(records) == 3
    summary = report.summary()  # the NA sentence was written: it is not reported as skipped
    assert "na_relation" not in summary and "(1 labelled NA, written without a relation)" in summary
    assert f"no_entity_tags: 1 ({tmp_path / 'kbp.txt'}:10)" in summary


def test_gids(tmp_path):
    records, report = convert("gids", _write(tmp_path / "gids.json", GIDS))
    # the dataset's label is kept (relation-label policy); --relation-map renames
    assert records[0]["relations"] == [{"head": "James_Smurthwaite", "relation": "/people/deceased_person/place_of_death", "tail": "North_Ormesby"}]
    assert len(records) == 4 and records[2]["relations"] == [] and report.negatives == 1 and not report.skipped
    assert records[3]["relations"] == [{"head": "Marie Curie", "relation": "/people/person/place_of_birth", "tail": "Warsaw"}]


def test_duie(tmp_path):
    records, _ = convert("duie", _write(tmp_path / "duie.json", DUIE))
    assert {(r["head"], r["relation"], r["tail"]) for r in records[0]["relations"]} == {("离开", "作曲", "张宇"), ("离开", "歌手", "张宇")}
    assert {(r["head"], r["relation"], r["tail"]) for r in records[1]["relations"]} == {("周星驰", "获奖", "金像奖"), ("周星驰", "获奖_inWork", "喜剧之王")}
    assert {"text": "张宇", "type": "人物", "start": 6, "end": 8} in records[0]["entities"]


def test_duee(tmp_path):
    records, _ = convert("duee", _write(tmp_path / "duee.json", DUEE))
    ev = records[0]["events"][0]
    assert (ev["trigger"], ev["type"], ev["start"]) == ("裁员", "组织关系-裁员", 2)
    assert ev["arguments"] == [{"text": "雀巢", "role": "裁员方", "start": 0, "end": 2}, {"text": "4000人", "role": "裁员人数", "start": 4, "end": 9}]
    assert schema_from_records(records, "ee") == [{"event_type": "组织关系-裁员", "arguments": ["裁员人数", "裁员方"]}]


def test_iepile(tmp_path):
    records, report = convert("iepile", _write(tmp_path / "iepile.json", IEPILE))
    assert report.skipped == {"unknown_task": 1, "bad_instruction_json": 1}
    assert [r["task"] for r in records] == ["ner", "re", "ee"]
    assert len(records) == 3  # the two DuIE lines about one text merge
    ner = records[0]
    assert ner["source"] == "CoNLL2003" and ("Allenby", "person") in {(e["text"], e["type"]) for e in ner["entities"]}
    assert len(records[1]["relations"]) == 2
    assert records[2]["events"][0]["arguments"] == [{"text": "雀巢", "role": "裁员方"}, {"text": "4000人", "role": "裁员人数"}]


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(KnowlmError, match="unknown format"):
        convert("nope", tmp_path / "x")
    with pytest.raises(KnowlmError, match="not found"):
        convert("duie", tmp_path / "missing.json")
    assert "skipped" in ConvertReport("x").summary()
