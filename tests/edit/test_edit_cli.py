"""``knowlm edit`` end to end, and the demo stage."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from _edit_world import request


def _run(args):
    from knowlm.cli.main import app

    return CliRunner().invoke(app, args)


def test_cli_edit_saves_self_describing_model(world_dir, facts_corpus, tmp_path):
    reqs = tmp_path / "reqs.json"
    reqs.write_text(json.dumps([request(0, 5)]))
    out = tmp_path / "edited"
    result = _run(["edit", "--model", str(world_dir), "--method", "rome", "--requests", str(reqs), "--output", str(out),
                   "--stats-corpus", str(facts_corpus), "--stats-dir", str(tmp_path / "st"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "reliability" in result.output and "saved the edited model" in result.output
    manifest = json.loads((out / "knowlm.json").read_text())
    assert manifest["produced_by"] == "knowlm edit" and manifest["edit"]["method"] == "rome"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["post"]["reliability"] >= 0.9
    from knowlm.edit.metrics import predict
    from knowlm.models import load

    model, tok = load(str(out), device="cpu")
    ((pred, gold),) = predict(model, tok, ["The capital of Zorland is"], ["Pell"])
    assert pred == gold


def test_cli_bad_request_is_one_line_exit_2(world_dir, tmp_path, capsys):
    import pytest

    from knowlm.cli.main import main

    reqs = tmp_path / "bad.json"
    reqs.write_text(json.dumps([{"prompt": "The capital of Zorland is", "subject": "Mars", "target_new": "Pell"}]))
    with pytest.raises(SystemExit) as exc:
        main(["edit", "--model", str(world_dir), "--requests", str(reqs)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "does not occur" in err and "\n" not in err


def test_demo_stage(tiny_model_dir, tmp_path):
    from knowlm.edit import demo_stage

    summary = demo_stage(tmp_path / "work", tiny_model_dir)
    assert summary["post"]["reliability"] >= 0.9
    assert summary["answer_after"].startswith("Paris")
    assert (tmp_path / "work" / "edit_metrics.json").is_file()
