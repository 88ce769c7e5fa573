"""The demo's extraction stage: held-out gold texts through a generator, scored, written down."""

import json

from scripted_generator import ScriptedGenerator

from knowlm.demo_extract import FALLBACK_GOLD, extract_stage


def test_extract_stage_scores_exactly_what_the_generator_answered(tmp_path, monkeypatch):
    def script(request):
        answer = {item: [] for item in request["schema"]}
        if "浙江大学" in request["input"]:
            answer["located in"] = [{"subject": "浙江大学", "object": "杭州"}]  # right
        elif "居里夫人" in request["input"]:
            answer["place of birth"] = [{"subject": "华沙", "object": "居里夫人"}]  # head and tail swapped
        else:
            return "长江流经上海。"  # not an answer
        return json.dumps(answer, ensure_ascii=False)

    loads = []

    def scripted_loader(model, adapter=None, template=None, **options):
        loads.append((model, adapter, options))
        return ScriptedGenerator(script)

    monkeypatch.setattr("knowlm.infer.load_generator", scripted_loader)
    summary = extract_stage(tmp_path, tmp_path / "model", gold=[dict(r) for r in FALLBACK_GOLD], n_texts=3, max_new_tokens=24, tag="before")
    assert loads == [(str(tmp_path / "model"), None, {"device": "cpu"})]
    assert {k: summary[k] for k in ("stage", "task", "texts", "gold_source", "parse_failures")} == {
        "stage": "before", "task": "re", "texts": 3, "gold_source": "given", "parse_failures": 1}
    assert (summary["precision"], summary["recall"]) == (0.5, 1 / 3) and abs(summary["f1"] - 0.4) < 1e-12
    preds = [json.loads(line) for line in (tmp_path / "before" / "pred.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(p["id"], p["parse_status"]) for p in preds] == [("ie-demo-3", "ok"), ("ie-demo-4", "ok"), ("ie-demo-5", "failed")]
    report = json.loads(open(summary["report"], encoding="utf-8").read())
    assert (report["relation"]["tp"], report["relation"]["n_pred"], report["relation"]["n_gold"]) == (1, 2, 3)
