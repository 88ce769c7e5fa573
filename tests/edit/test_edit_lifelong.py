"""Lifelong editing: sequential mode with a curve, AlphaEdit against sequential ROME/MEMIT, GRACE's codebook,
and editing an instruction model through its prompt template."""

from __future__ import annotations

import json

import pytest
import torch

from _edit_world import CAPITALS, PROMPT, checksum, request
from knowlm.edit import edit, save_edited

METRICS = ("reliability", "generalisation", "locality")


@pytest.fixture(scope="module")
def six_edits():
    return [request(i, (i + 5) % 12) for i in range(6)]


def test_sequential_curve_and_plot(world, stats_corpus, six_edits, tmp_path, shared_stats_dir):
    from knowlm.edit.curves import plot_curve

    model, tok = world
    before = checksum(model)
    result = edit(model, tok, six_edits[:4], method="rome", hparams="tiny", mode="sequential", eval_every=2,
                  stats_corpus=stats_corpus, stats_dir=shared_stats_dir, show_answers=False, mom2_n_samples=60)
    curve = result.metrics["curve"]
    assert [p["edits"] for p in curve] == [2, 4]
    assert {k: curve[-1][k] for k in METRICS} == {k: result.metrics["post"][k] for k in METRICS}
    assert result.metrics["num_edits"] == 4 and checksum(model) == before
    png = plot_curve(result.metrics, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_alphaedit_keeps_locality_where_sequential_rome_and_memit_lose_it(world, stats_corpus, six_edits, shared_stats_dir):
    model, tok = world
    post = {}
    for method in ("rome", "memit", "alphaedit"):
        result = edit(model, tok, six_edits, method=method, hparams="tiny", mode="sequential", stats_corpus=stats_corpus,
                      stats_dir=shared_stats_dir, show_answers=False, mom2_n_samples=60)
        post[method] = result.metrics["post"]
    assert post["alphaedit"]["reliability"] == 1.0 and post["alphaedit"]["locality"] == 1.0
    assert post["rome"]["locality"] < 0.9 and post["memit"]["locality"] < 0.9


def test_alphaedit_remembers_earlier_edits_only_within_a_run(world, stats_corpus, six_edits, shared_stats_dir):
    model, tok = world
    result = edit(model, tok, six_edits[:2], method="alphaedit", hparams="tiny", mode="sequential", keep=True,
                  stats_corpus=stats_corpus, stats_dir=shared_stats_dir, show_answers=False, mom2_n_samples=60)
    preserved = result.context.state["alphaedit_preserved"]
    assert sorted(preserved) == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    assert torch.linalg.matrix_rank(preserved["model.layers.0.mlp.down_proj"]) == 2  # one key per edit
    result.restore()
    assert result.context.state == {}


def test_grace_codebook_edits_without_changing_weights(world, six_edits, tmp_path):
    from knowlm.edit.grace import attach_codebook
    from knowlm.edit.metrics import predict

    model, tok = world
    before = checksum(model)
    prompts = [PROMPT.format(s) for s in ("Zorland", "Borvia", "Gadra")]
    original = predict(model, tok, prompts, [CAPITALS[5]] * 3, generate=True)
    result = edit(model, tok, six_edits[:4], method="grace", hparams="tiny", mode="sequential", keep=True, show_answers=False)
    post = result.metrics["post"]
    assert post["reliability"] == 1.0 and post["locality"] == 1.0
    assert result.metrics["grace"] == {"module": "model.layers.3.mlp.down_proj", "codebook_size": 4}
    assert result.metrics["edited_weights"] == [] and checksum(model) == before
    edited = predict(model, tok, prompts, [CAPITALS[5]] * 3, generate=True)
    assert edited[0][0] == edited[0][1]  # Zorland -> CAPITALS[5]
    out = save_edited(result, model, tok, tmp_path / "edited")
    assert (out / "grace.pt").is_file() and json.loads((out / "knowlm.json").read_text())["edit"]["codebook"] == "grace.pt"
    result.restore()  # the hook goes: the model answers as before
    assert predict(model, tok, prompts, [CAPITALS[5]] * 3, generate=True) == original
    adaptor = attach_codebook(model, out / "grace.pt")
    assert len(adaptor) == 4 and predict(model, tok, prompts, [CAPITALS[5]] * 3, generate=True) == edited
    adaptor.remove()


def test_single_mode_forgets_lifelong_state_between_edits(world, six_edits):
    model, tok = world
    result = edit(model, tok, six_edits[:3], method="grace", hparams="tiny", mode="single", show_answers=False)
    assert result.metrics["post"]["reliability"] == 1.0
    assert "grace" not in result.metrics or result.metrics["grace"]["codebook_size"] == 1


def test_edit_through_chat_template(world, tmp_path):
    """An instruction model is edited and measured on the prompt its template renders."""
    from knowlm.edit.editor import make_wrap
    from knowlm.edit.metrics import predict
    from knowlm.models.templates import render

    model, tok = world
    wrap = make_wrap("alpaca")
    assert wrap("The capital of Zorland is") == render("alpaca", "The capital of Zorland is")
    req = request(0, 5)
    result = edit(model, tok, [req], method="ft", hparams="tiny", template="alpaca", keep=True, show_answers=False,
                  objective="target_new", norm_constraint=0.0, num_steps=60)
    assert result.metrics["template"] == "alpaca" and result.metrics["post"]["reliability"] == 1.0
    ((pred, gold),) = predict(model, tok, [wrap(req["prompt"])], [req["target_new"]])
    assert pred == gold
    result.restore()
    ((pred, gold),) = predict(model, tok, [wrap(req["prompt"])], [req["target_new"]])
    assert pred != gold
