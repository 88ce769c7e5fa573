"""``knowlm edit`` end to end, and the demo stage."""

from __future__ import annotations

import json

from _edit_world import request


def test_cli_edit_saves_self_describing_model(cli, world_dir, facts_corpus, tmp_path):
    reqs = tmp_path / "reqs.json"
    reqs.write_text(json.dumps([request(0, 5)]))
    out = tmp_path / "edited"
    result = cli("edit", "--model", world_dir, "--method", "rome", "--requests", reqs, "--output", out,
                 "--stats-corpus", facts_corpus, "--stats-dir", tmp_path / "st", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert "reliability" in result.stdout and "saved the edited model" in result.stdout
    manifest = json.loads((out / "knowlm.json").read_text())
    assert manifest["produced_by"] == "knowlm edit" and manifest["edit"]["method"] == "rome"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["post"]["reliability"] >= 0.9
    from knowlm.edit.metrics import predict
    from knowlm.models import load

    model, tok = load(str(out), device="cpu")
    ((pred, gold),) = predict(model, tok, ["The capital of Zorland is"], ["Pell"])
    assert pred == gold


def test_cli_bad_request_is_one_line_exit_2(cli, world_dir, tmp_path):
    reqs = tmp_path / "bad.json"
    reqs.write_text(json.dumps([{"prompt": "The capital of Zorland is", "subject": "Mars", "target_new": "Pell"}]))
    result = cli("edit", "--model", world_dir, "--requests", reqs)
    last = result.stderr.splitlines()[-1]
    assert result.exit_code == 2 and last.startswith("error:") and "does not occur" in last and "Traceback" not in result.stderr


def test_demo_stage(tiny_model_dir, tmp_path):
    from knowlm.edit import demo_stage

    summary = demo_stage(tmp_path / "work", tiny_model_dir)
    assert summary["post"]["reliability"] >= 0.9
    assert summary["answer_after"].startswith("Paris")
    assert (tmp_path / "work" / "edit_metrics.json").is_file()
