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


def test_help_example_is_a_valid_command():
    """Every flag of the --help example exists, and its model is a path (not a made-up name)."""
    import re

    from knowlm.cli.edit import edit_command

    doc = edit_command.__doc__
    example = re.search(r"Example: (knowlm edit .+)", doc).group(1).split()
    flags = {opt for param in __import__("inspect").signature(edit_command).parameters.values()
             for opt in param.default.param_decls}
    used = [word for word in example if word.startswith("-")]
    assert used and all(flag in flags for flag in used)
    assert example[example.index("--model") + 1].startswith(("./", "/", "demo-work/"))  # a path `make demo` creates


def test_readme_form_with_many_requests_defaults_to_sequential(cli, world_dir, stats_corpus, tmp_path):
    """`knowlm edit -m M --method rome --requests R.json --output DIR` with several requests: no --mode needed."""
    reqs = tmp_path / "reqs.json"
    reqs.write_text(json.dumps([request(0, 5), request(1, 6), request(2, 7)]))
    out = tmp_path / "edited"
    args = ["edit", "-m", str(world_dir), "--method", "rome", "--requests", str(reqs), "--output", str(out),
            "--stats-corpus", str(stats_corpus), "--stats-dir", str(tmp_path / "st"), "--hparams", "tiny",
            "--eval-every", "1", "--plot", str(tmp_path / "curve.png")]
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    assert "ROME (sequential) applied 3 edit(s)" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "sequential" and [p["edits"] for p in metrics["curve"]] == [1, 2, 3]
    assert (out / "edit_curve.png").is_file() and (tmp_path / "curve.png").is_file()
    assert json.loads((out / "knowlm.json").read_text())["arguments"]["mode"] == "sequential"
    again = cli(*args)  # an existing output is refused before the weights are loaded
    assert again.exit_code == 2 and again.stderr.strip().endswith("already exists and is not empty; pass --overwrite to replace it")


def test_cli_dataset_file_per_category_table(cli, world_dir, tmp_path):
    """A KnowEdit-layout file: the table has one row per locality category; metrics.json has KnowEdit's summary."""
    record = request(0, 5)
    record["locality"] = {"Relation_Specificity": [{"prompt": "The capital of Gadra is", "ground_truth": [["Tarn"]]}],
                          "Forgetfulness": [{"prompt": "The capital of Velmar is", "ground_truth": "Jolt"}]}
    reqs = tmp_path / "knowedit.json"
    reqs.write_text(json.dumps([record]))
    result = cli("edit", "-m", world_dir, "--method", "ft", "--requests", reqs, "--hparams", "tiny", "--metrics", tmp_path / "m.json")
    assert result.exit_code == 0, result.stderr
    assert "locality/Relation_Specificity" in result.stdout and "locality/Forgetfulness" in result.stdout
    assert "KnowEdit: Edit Succ. 100.00; Locality " in result.stdout and "(Relation_Specificity " in result.stdout
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics["post"]["locality_by_category"]) == {"Relation_Specificity", "Forgetfulness"}
    assert set(metrics["knowedit"]) == {"edit_succ", "portability", "portability_by_category", "locality",
                                        "locality_by_category", "fluency"}
