"""IEPile parity: `knowlm eval --iepile --count duplicates` equals IEPile's eval_func.py (a faithful
copy in iepile_reference.py) on the same results file, in every task it scores; the IEPile test
layout converts; per-task scores; predictions sharing an id are merged, not dropped."""

import json
import random

import pytest

from knowlm.ie import score
from knowlm.ie.iepile import score_results
from knowlm.ie.iepile_scorer import eval_func_scores

from . import iepile_reference as ref

INSTRUCTIONS = {
    "NER": "你是专门进行实体抽取的专家。请从input中抽取出符合schema定义的实体，不存在的实体类型返回空列表。请按照JSON字符串的格式回答。",
    "RE": "你是专门进行关系抽取的专家。请从input中抽取出符合schema定义的关系三元组，不存在的关系返回空列表。请按照JSON字符串的格式回答。",
    "EE": "你是专门进行事件提取的专家。请从input中抽取出符合schema定义的事件，不存在的事件返回空列表，不存在的论元返回NAN，如果论元存在多值请返回列表。请按照JSON字符串的格式回答。",
    "EET": "你是专门进行事件提取的专家。请从input中抽取出符合schema定义的事件类型及事件触发词，不存在的事件返回空列表。请按照JSON字符串的格式回答。",
    "EEA": "你是专门进行事件论元提取的专家。请从input中抽取出符合schema定义的事件论元及论元角色，不存在的论元返回NAN或空字典，如果论元存在多值请返回列表。请按照JSON字符串的格式回答。",
}
TYPES = ["人物", "地点", "组织机构", "作品"]
RELATIONS = ["主演", "导演", "作者", "国籍"]
EVENTS = {"组织关系-裁员": ["时间", "裁员方", "裁员人数"], "人生-婚礼": ["时间", "地点", "参礼人员"], "竞赛行为-夺冠": ["冠军", "夺冠赛事"]}
SPANS = ["周星驰", "喜剧之王", "杭州", "浙江大学", "5月份", "900余人", "雀巢", "阿里巴巴", "中国", "刘德华"]


def _label(task, rng):
    n = rng.randrange(0, 5)
    if task == "NER":
        return [{"entity": rng.choice(SPANS), "entity_type": rng.choice(TYPES)} for _ in range(n)]
    if task == "RE":
        return [{"head": rng.choice(SPANS), "relation": rng.choice(RELATIONS), "tail": rng.choice(SPANS)} for _ in range(n)]
    events = []
    for _ in range(n):
        etype = rng.choice(list(EVENTS))
        args = [{"argument": rng.choice(SPANS), "role": role} for role in EVENTS[etype] if rng.random() < 0.6]
        events.append({"event_trigger": rng.choice(["裁员", "婚礼", "夺冠", "裁掉"]), "event_type": etype, "arguments": args})
    return events


def _schema(task, batch):
    if task in ("EE", "EEA"):
        return [{"event_type": t, **({"trigger": True} if task == "EE" else {}), "arguments": EVENTS[t]} for t in batch]
    return list(batch)


def _answer(task, label, batch, rng):
    """What a model might answer for one schema batch: the gold, perturbed the ways models go wrong."""
    answer = {}
    for name in batch:
        values = []
        for x in label:
            if task == "NER" and x["entity_type"] == name:
                values.append(x["entity"])
            elif task == "RE" and x["relation"] == name:
                values.append({"subject": x["head"], "object": x["tail"]})
            elif task == "EET" and x["event_type"] == name:
                values.append(x["event_trigger"])
            elif task in ("EE", "EEA") and x["event_type"] == name:
                args = {}
                for role in EVENTS[name]:
                    got = [a["argument"] for a in x["arguments"] if a["role"] == role]
                    args[role] = "NAN" if not got else got[0] if len(got) == 1 else got
                values.append({"trigger": x["event_trigger"], "arguments": args} if task == "EE" else args)
        roll = rng.random()
        if values and roll < 0.25:
            values = values + values[:1]  # a repeated answer: counted twice
        elif values and roll < 0.4:
            values = values[1:]
        elif roll < 0.55:  # a wrong extra answer
            if task == "NER":
                values.append(rng.choice(SPANS) + rng.choice(["", " "]))
            elif task == "RE":
                values.append({"subject": rng.choice(SPANS), "object": rng.choice(SPANS)})
            elif task == "EET":
                values.append(rng.choice(["裁员", "婚礼", 5]))
            elif task == "EE":
                values.append({"trigger": rng.choice(["裁员", "NAN", 3]), "arguments": {EVENTS[name][0]: [rng.choice(SPANS), "NAN"]}})
            else:
                values.append({EVENTS[name][0]: rng.choice(SPANS), "未知角色": "NAN"})
        elif roll < 0.6:
            values = "NAN"  # not a list: skipped by IEPile
        answer[name] = values
    if rng.random() < 0.1:
        answer["不在schema中"] = [SPANS[0]]
    text = json.dumps(answer, ensure_ascii=False)
    roll = rng.random()
    if roll < 0.08:
        return text[: rng.randrange(1, len(text))]  # cut off: a JSON error
    if roll < 0.1:
        return json.dumps([answer], ensure_ascii=False)  # not an object: an error
    if roll < 0.12:
        return "```json\n" + text + "\n```"  # knowlm reads it, IEPile does not
    return text


def _results(task, rng, n_texts=40, with_task=False):
    names = {"NER": TYPES, "RE": RELATIONS, "EET": list(EVENTS), "EE": list(EVENTS), "EEA": list(EVENTS)}[task]
    lines = []
    for i in range(n_texts):
        label = _label(task, rng)
        if task == "EEA" and not label:
            continue  # IEPile's EEA test files only hold texts with events
        text = f"第{i}段：" + "，".join(rng.sample(SPANS, 4))
        source = rng.choice(["DuIE2.0", "CMeIE"])
        schema_names = rng.sample(names, len(names))
        for batch in (schema_names[:2], schema_names[2:]):
            if not batch:
                continue
            prompt = {"instruction": INSTRUCTIONS[task], "schema": _schema(task, batch), "input": text}
            line = {"id": f"{i:064x}", "source": source, "instruction": json.dumps(prompt, ensure_ascii=False),
                    "label": json.dumps(label, ensure_ascii=False), "output": _answer(task, label, batch, rng)}
            if with_task:
                line["task"] = task
            lines.append(line)
    return lines


def _write(path, lines):
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    return path


def _cli(args) -> int:
    from knowlm.cli.main import main

    try:
        main(args)
    except SystemExit as exc:
        return exc.code or 0
    return 0


def _unrounded_f1(tp, pred, gold):
    p, r = (tp / pred if pred else 0.0), (tp / gold if gold else 0.0)
    return 2 * p * r / (p + r) if p + r else 0.0


@pytest.mark.parametrize("task", ["NER", "RE", "EE", "EET", "EEA"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_duplicates_count_equals_iepile_eval_func(tmp_path, task, seed):
    path = _write(tmp_path / "results.json", _results(task, random.Random(f"{task}{seed}")))
    expected, counter = ref.evaluate(path, task)
    report_path = tmp_path / "report.json"
    assert _cli(["eval", "--iepile", str(path), "--count", "duplicates", "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text(encoding="utf-8"))
    ours = report["iepile"][task]
    assert ours.keys() == expected.keys()
    for section, values in expected.items():
        assert ours[section].keys() == values.keys()
        for key, value in values.items():
            assert ours[section][key] == pytest.approx(value, abs=1e-9), (section, key)
    # knowlm's own measures in duplicates mode count exactly what IEPile counts (unrounded F1)
    if counter.__class__ is ref.EEMetric:
        pairs = {"event_argument": (counter.ag_tp, counter.ag_pred_num, counter.ag_gold_num)}
        if task == "EE":
            pairs["event_trigger"] = (counter.ee_tp, counter.ee_pred_num, counter.ee_gold_num)
    else:
        measure = {"NER": "entity", "RE": "relation", "EET": "event_trigger"}[task]
        pairs = {measure: (counter.tp, counter.pred_num, counter.gold_num)}
    for measure, (tp, n_pred, n_gold) in pairs.items():
        entry = report[measure]
        assert (entry["tp"], entry["n_pred"], entry["n_gold"]) == (tp, n_pred, n_gold), measure
        assert entry["f1"] == pytest.approx(_unrounded_f1(tp, n_pred, n_gold), abs=1e-9)
        assert report["per_task"][task][measure]["f1"] == pytest.approx(entry["f1"], abs=1e-12)
    assert report["count"] == "duplicates" and report["match"] == "exact"


def test_mixed_task_file_scores_each_task_like_iepile(tmp_path):
    rng = random.Random(7)
    per_task = {t: _results(t, rng, n_texts=12, with_task=True) for t in ("NER", "RE", "EE")}
    mixed = _write(tmp_path / "mixed.json", [line for lines in per_task.values() for line in lines])
    report = score_results(mixed, count="duplicates")
    assert set(report["per_task"]) == {"NER", "RE", "EE"}
    for task, lines in per_task.items():
        expected, _ = ref.evaluate(_write(tmp_path / f"{task}.json", lines), task)
        assert report["iepile"][task] == expected
    # overall = the sum of the tasks' measures
    assert report["entity"]["tp"] == report["per_task"]["NER"]["entity"]["tp"]
    assert report["relation"]["n_gold"] == report["per_task"]["RE"]["relation"]["n_gold"]


def test_set_counting_reads_outputs_like_knowlm(tmp_path):
    """Set mode: lenient reading (a fenced or cut-off answer still counts), distinct tuples."""
    label = [{"entity": "周星驰", "entity_type": "人物"}, {"entity": "喜剧之王", "entity_type": "作品"}]
    prompt = json.dumps({"instruction": INSTRUCTIONS["NER"], "schema": ["人物", "作品"], "input": "周星驰主演喜剧之王"}, ensure_ascii=False)
    lines = [
        {"id": "a", "instruction": prompt, "label": json.dumps(label, ensure_ascii=False),
         "output": '```json\n{"人物": ["周星驰", "周星驰"], "作品": ["喜剧之王"]}\n```'},
    ]
    path = _write(tmp_path / "r.json", lines)
    report = score_results(path, count="set")
    assert (report["entity"]["tp"], report["entity"]["n_pred"], report["entity"]["n_gold"]) == (2, 2, 2)
    assert report["by_count"]["duplicates"]["entity"]["n_pred"] == 0  # IEPile: a JSON error
    assert report["iepile"]["NER"]["total"] == {"总样本数": 1, "错误数": 1, "P": 0.0, "R": 0.0, "F1": 0.0}
    assert report["per_task"]["NER"]["n_texts"] == 1


def test_test_layout_converts_with_task_and_label_kept(tmp_path):
    """The real layout of IEPile's data/EE/test.json: no task, no source; one line per schema batch."""
    label = [{"event_trigger": "裁掉", "event_type": "组织关系-裁员", "arguments": [{"argument": "猛龙", "role": "裁员方"}]},
             {"event_trigger": "签下", "event_type": "组织关系-加盟", "arguments": [{"argument": "前锋萨加巴-科纳特", "role": "加盟者"}, {"argument": "猛龙", "role": "所加盟组织"}]},
             {"event_trigger": "裁掉", "event_type": "组织关系-裁员", "arguments": [{"argument": "猛龙", "role": "裁员方"}]}]
    text = "据猛龙随队记者Josh Lewenberg报道，消息人士透露，猛龙已将前锋萨加巴-科纳特裁掉。此前他与猛龙签下了一份Exhibit 10合同。"
    lines = []
    for schema in ([{"event_type": "组织关系-裁员", "trigger": True, "arguments": ["时间", "裁员人数", "裁员方"]}],
                   [{"event_type": "组织关系-加盟", "trigger": True, "arguments": ["所加盟组织", "加盟者", "时间"]}]):
        lines.append({"id": "673a374de3da6800f8655cacdbee5c38fa4e62f8a254e88fdb819652364f8abe",
                      "instruction": json.dumps({"instruction": INSTRUCTIONS["EE"], "schema": schema, "input": text}, ensure_ascii=False),
                      "label": json.dumps(label, ensure_ascii=False)})
    from knowlm.ie.datasets import convert

    records, report = convert("iepile", _write(tmp_path / "test.json", lines))
    assert report.read == 2 and report.written == 1 and not report.skipped
    record = records[0]
    assert record["id"] == lines[0]["id"] and record["task"] == "ee" and record["source"] == "iepile"
    assert [(e["trigger"], e["type"]) for e in record["events"]] == [("裁掉", "组织关系-裁员"), ("签下", "组织关系-加盟"), ("裁掉", "组织关系-裁员")]
    assert record["events"][1]["arguments"] == [{"text": "前锋萨加巴-科纳特", "role": "加盟者"}, {"text": "猛龙", "role": "所加盟组织"}]


def test_task_inferred_for_lines_without_task(tmp_path):
    from knowlm.ie.iepile import infer_task

    def prompt(task, schema):
        return {"instruction": INSTRUCTIONS[task], "schema": schema, "input": "x"}

    assert infer_task({}, prompt("NER", ["人物"]), []) == "NER"
    assert infer_task({}, prompt("RE", ["主演"]), []) == "RE"
    assert infer_task({}, prompt("EET", ["组织关系-裁员"]), []) == "EET"
    assert infer_task({}, prompt("EE", [{"event_type": "a", "trigger": True, "arguments": []}]), None) == "EE"
    assert infer_task({}, prompt("EEA", [{"event_type": "a", "arguments": []}]), None) == "EEA"
    assert infer_task({}, {"instruction": "?", "schema": [{"subject_type": "人物", "predicate": "国籍", "object_type": "国家"}], "input": "x"}, []) == "SPO"
    assert infer_task({}, {"instruction": "?", "schema": ["a"], "input": "x"}, [{"entity": "e", "entity_type": "a"}]) == "NER"
    assert infer_task({"task": "eet"}, prompt("NER", ["人物"]), []) == "EET"


def test_predictions_sharing_an_id_are_merged_not_dropped(tmp_path, capsys):
    """One record per prompt (IEPile's layout): 3/3/3, not the first record's 1/1/3."""
    gold = [{"id": "1", "text": "周星驰主演喜剧之王，在杭州", "entities": [
        {"text": "周星驰", "type": "人物"}, {"text": "喜剧之王", "type": "作品"}, {"text": "杭州", "type": "地点"}]}]
    pred = [{"id": "1", "entities": [{"text": "周星驰", "type": "人物"}]},
            {"id": "1", "entities": [{"text": "喜剧之王", "type": "作品"}]},
            {"id": "1", "entities": [{"text": "杭州", "type": "地点"}], "parse_notes": ["trailing_text"]},
            {"id": "1", "entities": [], "parse_error": "truncated"}]
    r = score(gold, pred)
    assert (r["entity"]["tp"], r["entity"]["n_pred"], r["entity"]["n_gold"]) == (3, 3, 3)
    assert r["merged_predictions"] == 3 and r["parse_failures"] == {"total": 0, "by_reason": {"truncated": 1}}
    g, p = tmp_path / "g.jsonl", tmp_path / "p.jsonl"
    _write(g, gold)
    _write(p, pred)
    assert _cli(["eval", "--gold", str(g), "--pred", str(p)]) == 0
    err = capsys.readouterr().err
    assert "warning: 3 prediction records shared an id with an earlier one and were merged" in err


def test_eval_func_scores_empty_and_unscored_tasks():
    assert eval_func_scores([]) == {}


def test_eval_cli_bad_combinations_exit_2(tmp_path, capsys):
    path = _write(tmp_path / "r.json", _results("NER", random.Random(0), n_texts=2))
    assert _cli(["eval", "--iepile", str(path), "--gold", str(path)]) == 2
    assert _cli(["eval", "--gold", str(path)]) == 2
    assert _cli(["eval", "--iepile", str(path), "--count", "bag"]) == 2
    assert _cli(["eval", "--iepile", str(path), "--task", "XX"]) == 2
    assert _cli(["eval", "--iepile", str(tmp_path / "missing.json")]) == 2
    (tmp_path / "plain.json").write_text('{"id": "1", "text": "x"}\n')
    assert _cli(["eval", "--iepile", str(tmp_path / "plain.json")]) == 2  # no IEPile lines at all
    err = capsys.readouterr().err
    assert "Traceback" not in err and "replaces --gold and --pred" in err and "unknown count mode" in err
