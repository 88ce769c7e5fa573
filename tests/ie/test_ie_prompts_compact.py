"""The compact prompt wording for small models: short, no descriptions, same answer format."""

import json

import pytest

from knowlm.errors import KnowlmError
from knowlm.ie import build_prompt, gold_output, parse_output
from knowlm.ie.prompts import JSON_INSTRUCTIONS

RECORD = {"text": "Marie Curie was born in Warsaw.", "lang": "en",
          "relations": [{"head": "Marie Curie", "relation": "place of birth", "tail": "Warsaw"}]}
SCHEMA = {"place of birth": "Where the person was born.", "spouse": "Husband or wife."}


def test_compact_json_prompt_is_short_and_has_no_descriptions():
    instruction, input_text = build_prompt("re", RECORD["text"], SCHEMA, style="json", lang="en", wording="compact")
    assert input_text == ""
    assert instruction == '{"instruction": "Extract relations.", "schema": ["place of birth", "spouse"], "input": "Marie Curie was born in Warsaw."}'
    zh, _ = build_prompt("ner", "鲁迅出生于绍兴。", ["人物", "地点"], style="json", lang="zh", wording="compact")
    assert json.loads(zh) == {"instruction": "抽取实体。", "schema": ["人物", "地点"], "input": "鲁迅出生于绍兴。"}


def test_compact_knowlm_prompt_lists_the_schema():
    instruction, input_text = build_prompt("re", RECORD["text"], ["place of birth"], style="knowlm", lang="en", wording="compact")
    assert (instruction, input_text) == ('Relations: ["place of birth"]. One (subject,relation,object) per line.', RECORD["text"])


def test_full_wording_is_unchanged_and_answers_parse_the_same():
    full, _ = build_prompt("re", RECORD["text"], SCHEMA, style="json", lang="en")
    assert json.loads(full)["instruction"].startswith(JSON_INSTRUCTIONS[("re", "en")][0])
    answer = gold_output("re", RECORD, list(SCHEMA))
    parsed = parse_output(answer, "re", list(SCHEMA), text=RECORD["text"])
    assert parsed["relations"] == [{"head": "Marie Curie", "relation": "place of birth", "tail": "Warsaw"}]


def test_unknown_wording_is_an_error():
    with pytest.raises(KnowlmError, match="unknown prompt wording 'terse'"):
        build_prompt("re", "x", ["spouse"], wording="terse")


def test_extraction_asks_in_the_wording_the_model_was_tuned_on(tmp_path):
    from scripted_generator import ScriptedGenerator

    from knowlm.ie import extract_texts
    from knowlm.models.templates import resolve_ie_wording

    asked = []

    def script(request):
        asked.append(request["instruction"])
        return json.dumps({k: [] for k in request["schema"]})

    generator = ScriptedGenerator(script)
    extract_texts(generator, ["Marie Curie was born in Warsaw."], "re", ["place of birth"], lang="en")
    generator.ie_wording = "compact"  # what load_generator sets from knowlm.json
    extract_texts(generator, ["Marie Curie was born in Warsaw."], "re", ["place of birth"], lang="en")
    extract_texts(generator, ["Marie Curie was born in Warsaw."], "re", ["place of birth"], lang="en", wording="full")
    assert asked[0].startswith(JSON_INSTRUCTIONS[("re", "en")][0]) and asked[1] == "Extract relations." and asked[2] == asked[0]

    model = tmp_path / "model"
    model.mkdir()
    assert resolve_ie_wording(model) == "full"
    (model / "knowlm.json").write_text(json.dumps({"ie_wording": "compact"}), encoding="utf-8")
    assert resolve_ie_wording(model) == "compact" and resolve_ie_wording(model, override="full") == "full"
    (model / "knowlm.json").write_text(json.dumps({"ie_wording": "terse"}), encoding="utf-8")
    with pytest.raises(KnowlmError, match="unknown prompt wording 'terse'"):
        resolve_ie_wording(model)
