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


# ---------------------------------------------------------------- GIDS as distributed

GIDS_TEXT = ("War as appropriate. Private Alfred James_Smurthwaite Sample. 26614. 2nd Battalion Yorkshire Regiment. Son of Edward "
             "James Sample, of North_Ormesby , Yorks. Died 2 April 1917. Aged 29. Born Ormesby, Enlisted Middlesbrough. Buried BUCQUOY "
             "ROAD CEMETERY, FICHEUX. Not listed on the Middlesbrough War Memorial Private Frederick Scott. 46449. 4th Battalion "
             "Yorkshire Regiment. Son of William and Maria Scott, of 25, Aspinall St., Heywood, Lancs. Born at West Hartlepool. "
             "Died 27 May 1918. Aged 24.")
GIDS_OPENNRE = [  # gds_train.txt as OpenNRE distributes it (its README's example line)
    {"relation": "/people/deceased_person/place_of_death", "text": GIDS_TEXT,
     "h": {"id": "/m/02qt0sv", "name": "James_Smurthwaite", "pos": [35, 52]}, "t": {"id": "/m/0fnhl9", "name": "North_Ormesby", "pos": [133, 146]}},
    {"relation": "NA", "text": "Barack_Obama gave a speech in Chicago .",
     "h": {"id": "/m/02mjmr", "name": "Barack_Obama", "pos": [0, 12]}, "t": {"id": "/m/01_d4", "name": "Chicago", "pos": [30, 37]}},
]
GIDS_WIKI80_TOKENS = {  # OpenNRE's token layout (wiki80, fewrel): token offsets, end exclusive
    "token": ["Marie", "Curie", "was", "born", "in", "Warsaw", "."], "h": {"name": "marie curie", "id": "Q7186", "pos": [0, 2]},
    "t": {"name": "warsaw", "id": "Q270", "pos": [5, 6]}, "relation": "place of birth"}
GIDS_RESIDE_BAGS = [  # RESIDE's gids_train_bags.json (preproc/make_bags.py): numeric ids of preproc/gids_relation2id.json
    {"sub": "james_smurthwaite", "obj": "north_ormesby", "sub_id": "/m/02qt0sv", "obj_id": "/m/0fnhl9",
     "sents": [{"sent": "Private Alfred James_Smurthwaite Sample , son of Edward , of North_Ormesby , Yorkshire .",
                "rsent": "private alfred james_smurthwaite sample , son of edward , of north_ormesby , yorkshire .", "corenlp": {}, "openie": None},
               {"sent": "James_Smurthwaite died at North_Ormesby .", "rsent": "james_smurthwaite died at north_ormesby .", "corenlp": {}, "openie": None}],
     "rel": [4]},
    {"sub": "barack_obama", "obj": "chicago", "sub_id": "/m/02mjmr", "obj_id": "/m/01_d4",
     "sents": [{"sent": "Barack_Obama spoke in Chicago .", "rsent": "", "corenlp": {}, "openie": None}], "rel": [0]},
    {"sub": "ada_lovelace", "obj": "london", "sub_id": "/m/1", "obj_id": "/m/2",  # a test bag may hold several relations
     "sents": [{"sent": "Ada_Lovelace was born and died in London .", "rsent": "", "corenlp": {}, "openie": None}], "rel": [3, 4]},
]


def test_gids_opennre_layout(tmp_path):
    records, report = convert("gids", _write(tmp_path / "gds_train.txt", GIDS_OPENNRE))
    assert report.read == 2 and report.written == 2 and not report.skipped and report.negatives == 1
    assert records[0]["text"] == GIDS_TEXT
    assert records[0]["relations"] == [{"head": "James_Smurthwaite", "relation": "/people/deceased_person/place_of_death", "tail": "North_Ormesby"}]
    assert records[1]["relations"] == []
    tokens, _ = convert("gids", _write(tmp_path / "wiki.txt", [GIDS_WIKI80_TOKENS]))
    assert tokens[0]["text"] == "Marie Curie was born in Warsaw ."
    assert tokens[0]["relations"] == [{"head": "Marie Curie", "relation": "place of birth", "tail": "Warsaw"}]


def test_gids_reside_bags(tmp_path):
    records, report = convert("gids", _write(tmp_path / "gids_train_bags.json", GIDS_RESIDE_BAGS))
    assert report.read == 3 and len(records) == 4 and not report.skipped and report.negatives == 1
    assert [r["relations"] for r in records[:2]] == [[{"head": "James_Smurthwaite", "relation": "/people/deceased_person/place_of_death", "tail": "North_Ormesby"}]] * 2
    assert records[0]["text"].startswith("Private Alfred James_Smurthwaite")
    assert records[2]["relations"] == []
    assert {r["relation"] for r in records[3]["relations"]} == {"/people/person/place_of_birth", "/people/deceased_person/place_of_death"}


def test_relation_map_renames_decodes_and_drops(tmp_path):
    names = _write(tmp_path / "names.json", "")
    names.write_text(json.dumps({"/people/deceased_person/place_of_death": "place of death", "/people/person/place_of_birth": "NA"}))
    records, report = convert("gids", _write(tmp_path / "bags.json", GIDS_RESIDE_BAGS), relation_map=names)
    assert records[0]["relations"][0]["relation"] == "place of death"
    assert records[3]["relations"] == [{"head": "Ada_Lovelace", "relation": "place of death", "tail": "London"}]
    assert report.dropped == {"mapped_to_na": 1}
    # a rel2id table (OpenNRE's gds_rel2id.json numbering) decodes numeric labels instead of RESIDE's
    rel2id = tmp_path / "gds_rel2id.json"
    rel2id.write_text(json.dumps({"NA": 0, "/people/deceased_person/place_of_death": 1, "/people/person/place_of_birth": 2,
                                  "/people/person/education./education/education/institution": 3, "/people/person/education./education/education/degree": 4}))
    records, _ = convert("gids", tmp_path / "bags.json", relation_map=rel2id)
    assert records[0]["relations"][0]["relation"] == "/people/person/education./education/education/degree"
    # the same map renames every format's labels
    nyt_map = tmp_path / "nyt.json"
    nyt_map.write_text(json.dumps({"/people/person/nationality": "nationality"}))
    records, _ = convert("nyt11", _write(tmp_path / "nyt.jsonl", [NYT11]), relation_map=nyt_map)
    assert ("Bobby Fischer", "nationality", "Iceland") in {(r["head"], r["relation"], r["tail"]) for r in records[0]["relations"]}
    with pytest.raises(KnowlmError, match="relation map"):
        (tmp_path / "bad.json").write_text("[1, 2]")
        convert("gids", tmp_path / "bags.json", relation_map=tmp_path / "bad.json")


# ---------------------------------------------------------------- sample.json (IEPile / DeepKE InstructKGC)

SAMPLE_NER = [  # IEPile data/NER/sample.json
    {"text": "相比之下，青岛海牛队和广州松日队的雨中之战虽然也是0∶0，但乏善可陈。",
     "entity": [{"entity": "广州松日队", "entity_type": "组织机构"}, {"entity": "青岛海牛队", "entity_type": "组织机构"}]},
    {"text": "当前国有大中型企业改制中存在的问题。", "entity": []},
]
SAMPLE_EE = [  # IEPile / DeepKE data/EE/sample.json
    {"text": "消失的“外企光环”，5月份在华裁员900余人，香饽饽变“臭”了",
     "event": [{"event_trigger": "裁员", "event_type": "组织关系-裁员", "arguments": [{"argument": "900余人", "role": "裁员人数"}, {"argument": "5月份", "role": "时间"}]}]},
    {"text": "冠军射手被裁掉，欲加入湖人队，但湖人却无意，冠军射手何去何从", "event": [{"event_trigger": "裁掉", "event_type": "组织关系-裁员", "arguments": []}]},
]
SAMPLE_SPO = [  # IEPile data/SPO/sample.json
    {"text": "《邪少兵王》是冰火未央写的网络小说连载于旗峰天下",
     "relation": [{"head": "邪少兵王", "head_type": "图书作品", "relation": "作者", "tail": "冰火未央", "tail_type": "人物"}]},
]


def test_instructie_keeps_entities_events_and_typed_relations(tmp_path):
    ner, report = convert("instructie", _write(tmp_path / "ner.json", SAMPLE_NER))
    assert ner[0]["entities"] == [{"text": "广州松日队", "type": "组织机构"}, {"text": "青岛海牛队", "type": "组织机构"}] and ner[1]["entities"] == []
    assert report.written == 2 and not report.skipped and not report.dropped
    ee, _ = convert("instructie", _write(tmp_path / "ee.json", SAMPLE_EE))
    assert ee[0]["events"] == [{"trigger": "裁员", "type": "组织关系-裁员", "arguments": [{"text": "900余人", "role": "裁员人数"}, {"text": "5月份", "role": "时间"}]}]
    assert ee[1]["events"] == [{"trigger": "裁掉", "type": "组织关系-裁员", "arguments": []}]
    spo, _ = convert("instructie", _write(tmp_path / "spo.json", SAMPLE_SPO))
    assert spo[0]["relations"] == [{"head": "邪少兵王", "relation": "作者", "tail": "冰火未央", "head_type": "图书作品", "tail_type": "人物"}]
    assert schema_from_records(spo, "spo") == [{"subject_type": "图书作品", "predicate": "作者", "object_type": "人物"}]
    assert schema_from_records(ee, "eet") == ["组织关系-裁员"]


def test_duee_offset_that_does_not_point_at_the_span_is_dropped_not_the_argument(tmp_path):
    item = json.loads(json.dumps(DUEE[0]))
    item["event_list"][0]["arguments"][1]["argument_start_index"] = 7
    records, report = convert("duee", _write(tmp_path / "duee.json", [item]))
    assert records[0]["events"][0]["arguments"][1] == {"text": "4000人", "role": "裁员人数"}
    assert report.dropped == {"offset_mismatch": 1} and not report.skipped


# ---------------------------------------------------------------- wrong-typed fields

BAD_FIELDS = [
    ("duie", DUIE[0], {"text": "《离开》是由张宇谱曲", "spo_list": "oops"}),
    ("duie", DUIE[0], {"text": "《离开》是由张宇谱曲", "spo_list": ["oops"]}),
    ("duee", DUEE[0], {"text": "雀巢裁员", "event_list": {"event_type": "组织关系-裁员"}}),
    ("duee", DUEE[0], {"text": "雀巢裁员", "event_list": [{"event_type": "组织关系-裁员", "trigger": "裁员", "arguments": "雀巢"}]}),
    ("nyt11", NYT11, {"sentText": "A B", "relationMentions": "oops"}),
    ("nyt11", NYT11, {"sentText": 5}),
    ("gids", GIDS_OPENNRE[0], {"relation": "NA", "text": "a b", "h": {"name": 3}, "t": {"name": "b"}}),
    ("gids", GIDS_RESIDE_BAGS[0], {"sub": "a", "obj": "b", "sents": 5, "rel": [4]}),
    ("gids", GIDS_RESIDE_BAGS[0], {"sub": "a", "obj": "b", "sents": ["a b"], "rel": [99]}),
    ("instructie", SAMPLE_EE[0], {"text": "x", "relation": "oops"}),
    ("instructie", SAMPLE_EE[0], {"text": "x", "event": [{"event_type": "e", "arguments": [{"argument": ["a"], "role": "r"}]}]}),
    ("scierc", SCIERC, {"doc_key": "d", "sentences": "oops"}),
]


@pytest.mark.parametrize("fmt,good,bad", BAD_FIELDS, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(BAD_FIELDS)])
def test_wrong_typed_fields_are_skipped_as_bad_field_with_file_line(tmp_path, fmt, good, bad):
    path = _write(tmp_path / "data.json", [good, bad, good])
    records, report = convert(fmt, path)
    assert report.skipped.get("bad_field") == 1, report.summary()
    assert report.read == 3 and len(records) >= 2
    assert f"bad_field: 1 ({path}:2)" in report.summary()


def test_convert_cli_wrong_typed_field_no_traceback(tmp_path, capsys):
    from knowlm.cli.main import main

    src = _write(tmp_path / "duie.json", [{"text": "x", "spo_list": "oops"}, DUIE[0]])
    try:
        main(["convert", "duie", str(src), str(tmp_path / "out.jsonl")])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    assert code == 0 and "Traceback" not in out.err + out.out
    assert f"skipped bad_field: 1 ({src}:1)" in out.out
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 1
