"""Joint NER + RE consistency (:mod:`knowlm.ie.typecheck`): exact kept and dropped relations."""

from knowlm.ie.kg2instruct import RelationSchema
from knowlm.ie.typecheck import signatures_from_schema, typed_relations

SIGNATURES = {"place of birth": ({"person"}, {"location"}), "located in": ({"location", "organization"}, {"location"}),
              "named after": (set(), set())}


def rel(head, relation, tail):
    return {"head": head, "relation": relation, "tail": tail}


def test_keeps_relations_whose_arguments_are_typed_as_the_signature_allows():
    record = {"entities": [{"text": "Edison", "type": "person"}, {"text": "Milan", "type": "location"},
                           {"text": "Menlo Park", "type": "location"}, {"text": "Menlo Park", "type": "organization"}],
              "relations": [rel("Edison", "place of birth", "Milan"),        # person -> location: kept
                            rel("Milan", "place of birth", "Edison"),        # reversed: dropped
                            rel("Edison", "place of birth", "West Orange"),  # tail not among the entities: dropped
                            rel("Menlo Park", "located in", "Milan"),        # one of its two types fits: kept
                            rel("Edison", "named after", "Milan"),           # no type constraint: kept
                            rel("Edison", "spouse", "Milan")]}               # no signature known: kept
    kept, dropped = typed_relations(record, SIGNATURES)
    assert kept == [rel("Edison", "place of birth", "Milan"), rel("Menlo Park", "located in", "Milan"),
                    rel("Edison", "named after", "Milan"), rel("Edison", "spouse", "Milan")]
    assert dropped == 2


def test_no_entity_answer_keeps_every_relation():
    record = {"entities": [], "relations": [rel("Milan", "place of birth", "Edison")]}
    assert typed_relations(record, SIGNATURES) == (record["relations"], 0)


def test_signatures_from_a_relation_schema(tmp_path):
    path = tmp_path / "schema.json"
    path.write_text('{"relations": {"出生地": {"head_types": ["人物"], "tail_types": ["地点"]}, "别名": {}}}', encoding="utf-8")
    assert signatures_from_schema(RelationSchema.load(path)) == {"出生地": ({"人物"}, {"地点"}), "别名": (set(), set())}
