"""KG2Instruction options of the IE recipe: held-out documents, canonical names, argument
entities, document records, NER instructions, compact prompts and KG-driven augmentation."""

import json
from pathlib import Path

import pytest

from knowlm.errors import KnowlmError
from knowlm.ie.kg2instruct import KG2InstructConfig, KnowledgeGraph, kg2instruct
from knowlm.ie.kg2instruct.augment import PassageWriter, load_templates
from knowlm.ie.kg2instruct.records import argument_entities, entity_types, make_record

ENTITIES = [
    {"id": "marie", "name": "Marie Curie", "type": "person", "aliases": ["Curie"]},
    {"id": "pierre", "name": "Pierre Curie", "type": "person", "aliases": []},
    {"id": "warsaw", "name": "Warsaw", "type": "location", "aliases": []},
    {"id": "paris", "name": "Paris", "type": "location", "aliases": []},
    {"id": "poland", "name": "Poland", "type": "location", "aliases": []},
    {"id": "y1867", "name": "1867", "type": "date", "aliases": []},
    {"id": "sorbonne", "name": "University of Paris", "type": "organization", "aliases": ["Sorbonne"]},
    {"id": "hz", "name": "杭州", "type": "地点", "aliases": ["杭州市"]},
    {"id": "zj", "name": "浙江", "type": "地点", "aliases": ["浙江省"]},
    {"id": "zju", "name": "浙江大学", "type": "组织机构", "aliases": ["浙大"]},
]
TRIPLES = [
    {"head": "marie", "relation": "place of birth", "tail": "warsaw"},
    {"head": "marie", "relation": "date of birth", "tail": "y1867"},
    {"head": "marie", "relation": "educated at", "tail": "sorbonne"},
    {"head": "marie", "relation": "spouse", "tail": "pierre"},
    {"head": "pierre", "relation": "place of birth", "tail": "paris"},
    {"head": "warsaw", "relation": "capital of", "tail": "poland"},
    {"head": "sorbonne", "relation": "located in", "tail": "paris"},
    {"head": "zju", "relation": "位于", "tail": "hz"},
    {"head": "hz", "relation": "所属省份", "tail": "zj"},
]
SCHEMA = {"relations": {
    "place of birth": {"head_types": ["person"], "tail_types": ["location"]},
    "date of birth": {"head_types": ["person"], "tail_types": ["date"]},
    "educated at": {"head_types": ["person"], "tail_types": ["organization"]},
    "spouse": {"head_types": ["person"], "tail_types": ["person"]},
    "capital of": {"head_types": ["location"], "tail_types": ["location"]},
    "located in": {"head_types": ["organization", "location"], "tail_types": ["location"]},
    "位于": {"head_types": ["组织机构"], "tail_types": ["地点"]},
    "所属省份": {"head_types": ["地点"], "tail_types": ["地点"]},
}}
DOCS = [
    {"id": "bio", "text": "Marie Curie was a physicist. Curie was born in Warsaw in 1867 and studied at the Sorbonne."},
    {"id": "held", "text": "Warsaw is the capital of Poland. Pierre Curie was born in Paris."},
    {"id": "zh", "text": "浙江大学位于杭州。杭州是浙江省的省会。"},
]
TEMPLATES = """
en:
  place of birth: ["{head} was born in {tail}."]
  date of birth: ["{head} was born in {tail}."]
  educated at: ["{head} studied at {tail}."]
  spouse: ["{head} married {tail}."]
  capital of: ["{head} is the capital of {tail}."]
  located in: ["{head} is in {tail}."]
zh:
  位于: ["{head}位于{tail}。"]
  所属省份: ["{head}属于{tail}。"]
"""


def write_inputs(tmp: Path):
    (tmp / "kg.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ENTITIES + TRIPLES) + "\n", encoding="utf-8")
    (tmp / "corpus.jsonl").write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in DOCS) + "\n", encoding="utf-8")
    (tmp / "schema.json").write_text(json.dumps(SCHEMA, ensure_ascii=False), encoding="utf-8")
    (tmp / "templates.yaml").write_text(TEMPLATES, encoding="utf-8")
    gold = {"id": "held", "relations": [{"head": "Warsaw", "relation": "capital of", "tail": "Poland"}]}
    (tmp / "gold.jsonl").write_text(json.dumps(gold) + "\n", encoding="utf-8")
    return tmp


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def build(tmp: Path, **config) -> tuple[dict, Path]:
    write_inputs(tmp)
    out = tmp / "out"
    options = dict(split_ratios=(1, 0, 0), styles=("json",))
    options.update(config)
    stats = kg2instruct([tmp / "corpus.jsonl"], [tmp / "kg.jsonl"], out, KG2InstructConfig(**options), schema_path=tmp / "schema.json",
                       holdout_path=tmp / "gold.jsonl", templates_path=tmp / "templates.yaml")
    return stats, out


def test_held_out_documents_appear_in_no_output(tmp_path):
    stats, out = build(tmp_path, records=("unit", "document"), augment=20)
    assert stats["held_out_documents"] == 1
    for name in ("records.jsonl", "train.jsonl", "dev.jsonl", "test.jsonl", "texts.jsonl"):
        text = (out / name).read_text(encoding="utf-8")
        assert "held" not in {r["id"].split("#")[0] for r in read(out / name)} and "Pierre Curie was born in Paris" not in text
    assert [r["id"] for r in read(out / "texts.jsonl") if r["source"] == "corpus"] == ["bio", "zh"]
    # the held-out document's facts (annotated or found by the labeller) are never written as passages
    for record in read(out / "records.jsonl"):
        for r in record["relations"]:
            assert (r["head"], r["relation"], r["tail"]) not in {("Warsaw", "capital of", "Poland"), ("Pierre Curie", "place of birth", "Paris")}
    assert stats["augmented_records"] == 20


def test_canonical_names_and_argument_entities(tmp_path):
    _, out = build(tmp_path, records=("unit", "document"), names="canonical", entities="arguments")
    records = {r["id"]: r for r in read(out / "records.jsonl")}
    sentence, document = records["bio#s1"], records["bio"]
    # the sentence alone does not contain "Marie Curie": the name stays as written
    assert [(r["head"], r["relation"], r["tail"]) for r in sentence["relations"]] == [
        ("Curie", "place of birth", "Warsaw"), ("Curie", "date of birth", "1867"), ("Curie", "educated at", "Sorbonne")]
    # the document does: every fact names her by the graph's name, in reading order
    assert [(r["head"], r["relation"], r["tail"]) for r in document["relations"]] == [
        ("Marie Curie", "place of birth", "Warsaw"), ("Marie Curie", "date of birth", "1867"), ("Marie Curie", "educated at", "Sorbonne")]
    assert [(e["text"], e["type"]) for e in document["entities"]] == [
        ("Marie Curie", "person"), ("Warsaw", "location"), ("1867", "date"), ("Sorbonne", "organization")]
    for entity in document["entities"]:
        assert document["text"][entity["start"]:entity["end"]] == entity["text"]


def test_default_records_keep_every_mention_as_written(tmp_path):
    _, out = build(tmp_path)
    records = {r["id"]: r for r in read(out / "records.jsonl")}
    assert "bio" not in records  # no document records unless asked
    assert [e["text"] for e in records["bio#s1"]["entities"]] == ["Curie", "Warsaw", "1867", "Sorbonne"]


def test_ner_and_re_instructions_with_compact_wording(tmp_path):
    _, out = build(tmp_path, records=("document",), names="canonical", entities="arguments", tasks=("re", "ner"), wording="compact", neg_ratio=0)
    schema = json.loads((out / "schema.json").read_text(encoding="utf-8"))
    assert schema == {"re": {"en": ["date of birth", "educated at", "place of birth"], "zh": ["位于", "所属省份"]},
                      "ner": {"en": ["date", "location", "organization", "person"], "zh": ["地点", "组织机构"]}}
    rows = {(r["id"], r["task"]): r for r in read(out / "train.jsonl")}
    ner = rows[("bio-0", "ner")]
    assert json.loads(ner["instruction"]) == {"instruction": "Extract entities.", "schema": ["date", "location", "organization", "person"], "input": DOCS[0]["text"]}
    assert json.loads(ner["output"]) == {"date": ["1867"], "location": ["Warsaw"], "organization": ["Sorbonne"], "person": ["Marie Curie"]}
    assert json.loads(rows[("zh-0", "re")]["instruction"])["instruction"] == "抽取关系。" and ner["wording"] == "compact"


def test_hard_negatives_come_from_relations_with_the_same_types(tmp_path):
    import random

    from knowlm.ie.kg2instruct.build import confusable_relations
    from knowlm.ie.kg2instruct.graph import RelationSchema
    from knowlm.ie.schema import sample_negatives

    schema = RelationSchema.load(write_inputs(tmp_path) / "schema.json")
    names = sorted(SCHEMA["relations"])
    groups = confusable_relations(schema, names)
    assert groups == [["capital of", "located in"], ["located in", "capital of"]]  # person -> x relations differ by tail type
    for seed in range(5):
        assert sample_negatives(["capital of"], names, 1, random.Random(seed), groups) == ["located in"]


def test_augmented_passages_state_graph_facts_with_templates(tmp_path):
    write_inputs(tmp_path)
    graph = KnowledgeGraph.load([tmp_path / "kg.jsonl"])
    templates = load_templates(tmp_path / "templates.yaml")
    held = {("warsaw", "capital of", "poland")}
    writer = PassageWriter(graph, templates, held, seed=3)
    again = PassageWriter(graph, templates, held, seed=3)
    for _ in range(40):
        lang, text, facts, spans = writer.passage()
        assert again.passage() == (lang, text, facts, spans)  # deterministic for a seed
        record = make_record(graph, "p", text, lang, facts, spans, "canonical", "arguments")
        for fact in facts:
            assert (fact.head.entity, fact.relation, fact.tail.entity) != ("warsaw", "capital of", "poland")
            assert fact.relation in graph.edges[(fact.head.entity, fact.tail.entity)]  # true facts only without swap
            assert text[fact.tail.start:fact.tail.start + len(fact.tail.text)] == fact.tail.text
        assert all(r["head"] in text and r["tail"] in text for r in record["relations"])
    swapped = PassageWriter(graph, templates, held, seed=3, swap=1.0)
    facts = [f for _ in range(60) for f in swapped.passage("en")[2]]
    assert any(f.relation not in graph.edges.get((f.head.entity, f.tail.entity), []) for f in facts)
    assert not any((f.head.entity, f.relation, f.tail.entity) in held for f in facts)


def test_templates_must_name_head_and_tail(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("en:\n  spouse: ['{head} married.']\n", encoding="utf-8")
    with pytest.raises(KnowlmError, match="needs {head} and {tail} once"):
        load_templates(bad)
    bad.write_text("fr:\n  spouse: ['{head} a épousé {tail}.']\n", encoding="utf-8")
    with pytest.raises(KnowlmError, match="top-level keys are languages"):
        load_templates(bad)


def test_entity_gold_from_relations_is_typed_by_the_graph(tmp_path):
    graph = KnowledgeGraph.load([write_inputs(tmp_path) / "kg.jsonl"])
    gold = {"relations": [{"head": "Marie Curie", "relation": "spouse", "tail": "Pierre Curie"},
                          {"head": "Marie Curie", "relation": "place of birth", "tail": "Warsaw"}]}
    assert argument_entities(gold, entity_types(graph)) == [
        {"text": "Marie Curie", "type": "person"}, {"text": "Pierre Curie", "type": "person"}, {"text": "Warsaw", "type": "location"}]


def test_bad_options_are_one_clear_error(tmp_path):
    for options, message in (({"records": ("page",)}, "records takes"), ({"names": "nick"}, "names must be"),
                             ({"entities": "all"}, "entities must be"), ({"wording": "terse"}, "unknown prompt wording"),
                             ({"augment_swap": 2.0}, "augment_swap")):
        with pytest.raises(KnowlmError, match=message):
            KG2InstructConfig(**options)
    write_inputs(tmp_path)
    with pytest.raises(KnowlmError, match="holdout file not found"):
        kg2instruct([tmp_path / "corpus.jsonl"], [tmp_path / "kg.jsonl"], tmp_path / "o", holdout_path=tmp_path / "none.jsonl")


def test_substituted_documents_keep_the_sentences_and_rename_every_entity(tmp_path):
    stats, out = build(tmp_path, records=("unit", "document"), names="canonical", entities="arguments", substitute=3)
    records = {r["id"]: r for r in read(out / "records.jsonl")}
    variants = [r for r in records.values() if r["source"] == "kg-substitute" and "#" not in r["id"]]
    assert stats["substituted_records"] == sum(1 for r in records.values() if r["source"] == "kg-substitute") > 0
    assert all(r["id"].split("~")[0] in {"bio", "zh"} for r in variants)  # never the held-out document
    texts = [t for t in read(out / "texts.jsonl") if t["source"] == "kg-substitute"]
    assert sorted(t["id"] for t in texts) == sorted(r["id"] for r in variants)  # pretraining reads each variant once
    for record in variants:
        original = records[record["id"].split("~")[0]]
        # the words around the entities are the original's
        skeleton = original["text"]
        for entity in original["entities"]:
            skeleton = skeleton.replace(entity["text"], "")
        for word in ("was born in", "studied at the", "位于"):
            assert (word in skeleton) == (word in record["text"])
        for r in record["relations"]:
            assert r["head"] in record["text"] and r["tail"] in record["text"]
            # the held-out document's facts, annotated or found by the labeller, are never produced
            assert (r["head"], r["relation"], r["tail"]) not in {("Warsaw", "capital of", "Poland"), ("Pierre Curie", "place of birth", "Paris")}
        kept = [r["relation"] for r in record["relations"]]
        assert set(kept) <= {r["relation"] for r in original["relations"]} and kept
    bio = next(r for r in variants if r["id"].startswith("bio"))
    person = next(e["text"] for e in bio["entities"] if e["type"] == "person")
    assert person != "Marie Curie" and person in ("Pierre Curie",)  # the only other person of the graph
    assert "Curie was born" not in bio["text"] or "Pierre Curie" in bio["text"]
