"""ROME, MEMIT, FT and IKE on a tiny LLaMA that was trained in the test session on made-up facts."""

from __future__ import annotations

import pytest
import torch

from _edit_world import checksum, request
from knowlm.edit import edit


def _state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_world_model_knows_its_facts(world):
    from _edit_world import CAPITALS, PROMPT, SUBJECTS
    from knowlm.edit.metrics import predict

    model, tok = world
    got = predict(model, tok, [PROMPT.format(s) for s in SUBJECTS], CAPITALS)
    assert sum(p == g for p, g in got) / len(got) >= 0.9


def test_rome_reliable_local_and_restorable(world, facts_corpus, tmp_path):
    model, tok = world
    original = _state(model)
    reqs = [request(0, 5)]
    result = edit(model, tok, reqs, method="rome", hparams="tiny", keep=True,
                  stats_corpus=facts_corpus, stats_dir=tmp_path / "stats")
    post = result.metrics["post"]
    assert post["reliability"] >= 0.9 and post["locality"] >= 0.9
    assert result.metrics["pre"]["reliability"] < 0.2
    edited = result.metrics["edited_weights"]
    assert edited == ["model.layers.0.mlp.down_proj.weight"]
    after = model.state_dict()
    for name, tensor in original.items():
        if name in edited:
            assert not torch.equal(after[name], tensor)
        else:
            assert torch.equal(after[name], tensor), name  # bit-identical
    result.restore()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    assert result.metrics["requests"][0]["answer_after"].startswith(reqs[0]["target_new"])


def test_rome_targets_single_mode_restores_by_default(world, facts_corpus, tmp_path):
    model, tok = world
    before = checksum(model)
    result = edit(model, tok, [request(i, (i + 5) % 12) for i in range(3)], method="rome", hparams="tiny",
                  stats_corpus=facts_corpus, stats_dir=tmp_path / "stats")
    post = result.metrics["post"]
    assert post["reliability"] >= 0.9 and post["locality"] >= 0.9
    assert checksum(model) == before


def test_memit_batch(world, facts_corpus, tmp_path):
    model, tok = world
    before = checksum(model)
    reqs = [request(i, (i + 5) % 12) for i in range(4)]
    result = edit(model, tok, reqs, method="memit", hparams="tiny", mode="batch",
                  stats_corpus=facts_corpus, stats_dir=tmp_path / "stats")
    post = result.metrics["post"]
    assert post["reliability"] >= 0.9 and post["locality"] >= 0.9
    assert result.metrics["edited_weights"] == ["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    assert checksum(model) == before


def test_ft_learns_the_edit_but_disturbs_other_facts(world, facts_corpus, tmp_path):
    model, tok = world
    reqs = [request(i, (i + 5) % 12) for i in range(3)]
    ft = edit(model, tok, reqs, method="ft", hparams="tiny").metrics["post"]
    rome = edit(model, tok, reqs, method="rome", hparams="tiny", stats_corpus=facts_corpus,
                stats_dir=tmp_path / "stats").metrics["post"]
    assert ft["reliability"] >= 0.9
    assert ft["locality"] < rome["locality"] and ft["locality"] < 0.9


def test_ike_edits_without_touching_weights(world):
    model, tok = world
    before = checksum(model)
    reqs = [request(i, (i + 5) % 12) for i in range(4)]
    result = edit(model, tok, reqs, method="ike", hparams="tiny", mode="batch", k=0)
    assert result.metrics["post"]["reliability"] >= 0.9
    assert result.metrics["edited_weights"] == []
    assert result.contexts[0].startswith("New Fact: The capital of Zorland is")
    assert checksum(model) == before
