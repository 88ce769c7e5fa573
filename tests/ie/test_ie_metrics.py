"""Scorer values computed by hand: duplicates, NA relations, parse failures, argument matching."""

import pytest

from knowlm.errors import KnowlmError
from knowlm.ie import score
from knowlm.ie.metrics import format_table, plot_per_type

GOLD = [
    {"id": "1", "text": "A met B", "source": "a",
     "entities": [{"text": "A", "type": "PER"}, {"text": "A", "type": "PER"}, {"text": "B", "type": "LOC"}]},
    {"id": "2", "text": "X born in Y", "source": "a",
     "relations": [{"head": "X", "relation": "born_in", "tail": "Y"}, {"head": "X", "relation": "NA", "tail": "Z"}]},
    {"id": "3", "text": "D corp", "source": "b", "entities": [{"text": "D", "type": "ORG"}]},
    {"id": "4", "text": "A attacked B", "source": "b",
     "events": [{"trigger": "attack", "type": "Attack", "arguments": [{"text": "A", "role": "attacker"}, {"text": "B", "role": "target"}]}]},
]
PRED = [  # deliberately out of order: matched by id
    {"id": "4", "events": [{"trigger": "attacked", "type": "Attack", "arguments": [{"text": "A", "role": "attacker"}, {"text": "C", "role": "target"}]}]},
    {"id": "1", "entities": [{"text": "A", "type": "PER"}, {"text": "A ", "type": "PER"}, {"text": "C", "type": "LOC"}]},
    {"id": "2", "relations": [{"head": "X", "relation": "born_in", "tail": "Y"}, {"head": "X", "relation": "no_relation", "tail": "Z"},
                              {"subject": "Y", "relation": "Other", "object": "X"}]},
    {"id": "3", "entities": [{"text": "D", "type": "ORG"}], "parse_error": "truncated"},
    {"id": "99", "entities": [{"text": "Q", "type": "PER"}]},
]


def test_hand_computed():
    r = score(GOLD, PRED)
    e = r["entity"]
    assert (e["tp"], e["n_pred"], e["n_gold"]) == (1, 2, 3)
    assert e["precision"] == pytest.approx(0.5) and e["recall"] == pytest.approx(1 / 3)
    assert e["f1"] == pytest.approx(0.4)  # 2 * 0.5 * (1/3) / (0.5 + 1/3), from unrounded P and R
    assert e["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "tp": 1, "n_pred": 1, "n_gold": 1}
    assert e["per_type"]["LOC"]["tp"] == 0 and e["per_type"]["ORG"]["n_pred"] == 0
    rel = r["relation"]
    assert (rel["tp"], rel["n_pred"], rel["n_gold"], rel["f1"]) == (1, 1, 1, 1.0)
    trig, arg = r["event_trigger"], r["event_argument"]
    assert (trig["tp"], trig["n_pred"], trig["n_gold"]) == (0, 1, 1)
    assert (arg["tp"], arg["n_pred"], arg["n_gold"]) == (1, 2, 2) and arg["f1"] == pytest.approx(0.5)
    assert set(arg["per_type"]) == {"attacker", "target"}
    assert r["parse_failures"] == {"total": 1, "by_reason": {"truncated": 1}}
    assert r["unmatched_predictions"] == 1 and r["missing_predictions"] == 0
    assert r["per_source"]["a"]["entity"]["tp"] == 1 and r["per_source"]["b"]["entity"]["n_gold"] == 1
    assert r["per_source"]["b"]["entity"]["parse_failures"] == 1
    for m in ("entity", "relation", "event_trigger", "event_argument"):
        assert {"precision", "recall", "f1", "tp", "n_pred", "n_gold", "per_type", "parse_failures"} <= set(r[m])
    assert "entity" in format_table(r)


def test_normalized_match_and_missing():
    gold = [{"id": "1", "text": "Jack Ma", "entities": [{"text": "Jack Ma", "type": "Person"}]},
            {"id": "2", "text": "ＡＢＣ", "entities": [{"text": "ＡＢＣ", "type": "ORG"}]}]
    pred = [{"id": "1", "entities": [{"text": "  jack   MA ", "type": "person"}]},
            {"id": "2", "entities": [{"text": "ABC", "type": "ORG"}]}]
    assert score(gold, pred)["entity"]["tp"] == 0
    assert score(gold, pred, match="normalized")["entity"]["tp"] == 2
    r = score(gold, pred[:1])
    assert r["missing_predictions"] == 1 and r["parse_failures"]["by_reason"] == {"missing": 1}


def test_positional_alignment_and_empty():
    gold = [{"text": "a", "entities": [{"text": "a", "type": "t"}]}, {"text": "b"}]
    pred = [{"entities": [{"text": "a", "type": "t"}]}, {"entities": []}]
    r = score(gold, pred)
    assert r["entity"]["f1"] == 1.0 and r["relation"]["f1"] == 0.0 and r["relation"]["n_gold"] == 0


def test_plot(tmp_path, artifacts_dir):
    r = score(GOLD, PRED)
    plot_per_type(r, tmp_path / "f1.png")
    assert (tmp_path / "f1.png").read_bytes()[:4] == b"\x89PNG"
    plot_per_type(r, artifacts_dir / "ie_per_type_f1.png")


def test_duplicates_counting_by_hand():
    """IEPile's match_mode="normal": a repeated prediction counts twice, a hit consumes one gold copy."""
    gold = [{"id": "1", "text": "t", "entities": [{"text": "A", "type": "PER"}, {"text": "A", "type": "PER"}, {"text": "B", "type": "LOC"}]}]
    pred = [{"id": "1", "entities": [{"text": "A", "type": "PER"}, {"text": "A", "type": "PER"}, {"text": "A", "type": "PER"}, {"text": "C", "type": "LOC"}]}]
    dup = score(gold, pred, count="duplicates")
    assert (dup["entity"]["tp"], dup["entity"]["n_pred"], dup["entity"]["n_gold"]) == (2, 4, 3)
    assert dup["entity"]["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert dup["entity"]["per_type"]["PER"] == {"precision": 2 / 3, "recall": 1.0, "f1": pytest.approx(0.8), "tp": 2, "n_pred": 3, "n_gold": 2}
    setc = score(gold, pred)
    assert (setc["entity"]["tp"], setc["entity"]["n_pred"], setc["entity"]["n_gold"]) == (1, 2, 2)
    assert dup["by_count"] == setc["by_count"] and setc["by_count"]["duplicates"]["entity"]["tp"] == 2
    assert dup["count"] == "duplicates" and setc["count"] == "set"
    with pytest.raises(KnowlmError, match="count mode"):
        score(gold, pred, count="bag")


def test_exact_match_keeps_whitespace():
    gold = [{"id": "1", "text": "t", "entities": [{"text": "A", "type": "PER"}]}]
    pred = [{"id": "1", "entities": [{"text": "A ", "type": "PER"}]}]
    assert score(gold, pred)["entity"]["tp"] == 1
    assert score(gold, pred, match="exact")["entity"]["tp"] == 0


def test_task_records_score_their_measures_and_per_task():
    gold = [
        {"id": "a", "text": "t", "task": "EET", "events": [{"trigger": "裁员", "type": "裁员", "arguments": [{"text": "雀巢", "role": "裁员方"}]}]},
        {"id": "b", "text": "t", "task": "eea", "events": [{"trigger": "裁员", "type": "裁员", "arguments": [{"text": "雀巢", "role": "裁员方"}]}]},
        {"id": "c", "text": "t", "task": "spo", "relations": [{"head": "h", "relation": "r", "tail": "t", "head_type": "人物", "tail_type": "国家"}]},
        {"id": "d", "text": "t", "entities": [{"text": "x", "type": "y"}]},
    ]
    pred = [
        {"id": "a", "events": [{"trigger": "裁员", "type": "裁员", "arguments": []}]},
        {"id": "b", "events": [{"trigger": "", "type": "裁员", "arguments": [{"text": "雀巢", "role": "裁员方"}]}]},
        {"id": "c", "relations": [{"head": "h", "relation": "r", "tail": "t", "head_type": "地点", "tail_type": "国家"}]},
        {"id": "d", "entities": [{"text": "x", "type": "y"}]},
    ]
    r = score(gold, pred)
    # EET: triggers only; EEA: arguments only (the trigger is given); SPO: the types must match too
    assert (r["event_trigger"]["tp"], r["event_trigger"]["n_pred"], r["event_trigger"]["n_gold"]) == (1, 1, 1)
    assert (r["event_argument"]["tp"], r["event_argument"]["n_pred"], r["event_argument"]["n_gold"]) == (1, 1, 1)
    assert (r["relation"]["tp"], r["relation"]["n_pred"], r["relation"]["n_gold"]) == (0, 1, 1)
    assert list(r["per_task"]) == ["SPO", "EET", "EEA"]
    assert set(r["per_task"]["EET"]) == {"event_trigger", "n_texts"} and r["per_task"]["EEA"]["event_argument"]["f1"] == 1.0
    assert r["entity"]["f1"] == 1.0 and r["n_texts"] == 4
