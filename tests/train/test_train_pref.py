"""DPO and ORPO: the losses against hand-computed values and TRL's formulas on real logits, and a
LoRA DPO run whose first loss is ln 2 (policy == reference at step 0)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from knowlm.train.objectives import PreferenceObjective, dpo_loss, orpo_odds_term


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_dpo_loss_by_hand():
    pi_c, pi_r, ref_c, ref_r = (torch.tensor([v]) for v in (-3.0, -5.0, -4.0, -4.0))
    # logits = (pi_c - pi_r) - (ref_c - ref_r) = 2; -log sigmoid(0.1 * 2) = softplus(-0.2)
    assert float(dpo_loss(pi_c, pi_r, ref_c, ref_r, beta=0.1)) == pytest.approx(_softplus(-0.2), abs=1e-7)
    smoothed = float(dpo_loss(pi_c, pi_r, ref_c, ref_r, beta=0.1, label_smoothing=0.25))
    assert smoothed == pytest.approx(0.75 * _softplus(-0.2) + 0.25 * _softplus(0.2), abs=1e-7)
    assert float(dpo_loss(pi_c, pi_r, pi_c, pi_r, beta=0.5)) == pytest.approx(math.log(2), abs=1e-7)


def test_orpo_odds_by_hand():
    c, r = -0.5, -2.0  # mean log-probs per token
    log_odds = (c - r) - (math.log1p(-math.exp(c)) - math.log1p(-math.exp(r)))
    term, got = orpo_odds_term(torch.tensor([c]), torch.tensor([r]), beta=0.2)
    assert float(got) == pytest.approx(log_odds, abs=1e-6) and log_odds == pytest.approx(2.287339, abs=1e-5)
    assert float(term) == pytest.approx(-0.2 * _softplus(-log_odds), abs=1e-6)


def _pair_batch(seed: int = 0):
    from knowlm.train.data_pref import collate_pairs

    rng = np.random.default_rng(seed)
    rows = []
    for prompt_len, c_len, r_len in ((5, 4, 6), (7, 3, 2)):
        prompt = rng.integers(3, 2000, size=prompt_len)
        pair = []
        for n in (c_len, r_len):
            ids = np.concatenate([prompt, rng.integers(3, 2000, size=n)])
            labels = ids.copy()
            labels[:prompt_len] = -100
            pair.append((ids, labels))
        rows.append([(pair[0], pair[1], np.array([-20.0, -25.0]), True)])
    return collate_pairs(rows, 64, 0)


def _trl_logps(logits, labels, average: bool):
    """TRL's get_batch_logps."""
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    mask = labels != -100
    labels[~mask] = 0
    per_token = torch.gather(logits.log_softmax(-1), 2, labels.unsqueeze(2)).squeeze(2)
    return (per_token * mask).sum(-1) / (mask.sum(-1) if average else 1)


@pytest.mark.parametrize("kind", ["dpo", "orpo"])
def test_objective_matches_trl_on_real_logits(tiny_model_dir, kind):
    from transformers import AutoModelForCausalLM

    from knowlm.train.config import SFTConfig
    from knowlm.train.distributed import DistEnv, wrap
    from knowlm.train.loss import install_loss_head
    from knowlm.train.objectives import combine

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), use_kernels=False)
    batch = _pair_batch()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    n, beta = 2, 0.1
    if kind == "dpo":
        logps = _trl_logps(logits, batch["labels"], average=False)
        ref = batch["ref_logps"]
        want = float(dpo_loss(logps[:n], logps[n:], ref[:, 0], ref[:, 1], beta).mean())
    else:
        logps = _trl_logps(logits, batch["labels"], average=True)
        chosen_labels = batch["labels"][:n]
        nll = torch.nn.functional.cross_entropy(logits[:n, :-1].reshape(-1, logits.shape[-1]), chosen_labels[:, 1:].reshape(-1))
        odds, _ = orpo_odds_term(logps[:n], logps[n:], beta)
        want = float(nll - odds.mean())
    install_loss_head(model, chunk=3)
    runtime = wrap("single", DistEnv(), model, SFTConfig(model="m", data=["d"], output="o"), "fp32", None)
    objective = PreferenceObjective(kind, beta)
    with torch.no_grad():
        sums, extras = objective.sums(runtime, batch)
    assert float(combine(sums, objective.counts(batch))) == pytest.approx(want, abs=1e-5)
    assert "rewards/margins" in extras


@pytest.fixture
def pref_file(write_records):
    people = [("Marie Curie", "Warsaw", "Paris"), ("Lu Xun", "Shaoxing", "Beijing"), ("Ada Lovelace", "London", "Rome"),
              ("袁隆平", "北京", "上海")]
    records = [{"instruction": "Where was this person born?", "input": p, "chosen": good, "rejected": bad}
               for p, good, bad in people * 3]
    records.append({"prompt": "Say hi.", "chosen": "hi", "rejected": "no"})  # TRL's layout
    return write_records(records, "prefs.jsonl")


def test_lora_dpo_run_starts_at_ln2_and_saves_an_adapter(tiny_model_dir, pref_file, tmp_path):
    from knowlm.train.config import PreferenceConfig
    from knowlm.train.metrics import read_metrics
    from knowlm.train.pref import preference

    out = tmp_path / "dpo"
    summary = preference(PreferenceConfig(model=str(tiny_model_dir), data=[pref_file], output=str(out), micro_batch_size=2,
                                          max_steps=4, learning_rate=5e-3, cutoff_len=192, logging_steps=1, val_size=3,
                                          strategy="single", objective="dpo", beta=0.1), quiet=True)
    records = [r for r in read_metrics(out) if "loss" in r]
    assert records[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # the reference is the starting model
    assert records[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert records[-1]["loss"] < math.log(2) and summary["eval_loss"] is not None
    assert summary["data"]["train_pairs"] == 10 and summary["kind"] == "dpo"
    manifest = json.loads((out / "knowlm.json").read_text())
    assert manifest["produced_by"] == "knowlm train dpo" and (out / "adapter_model.safetensors").is_file()


def test_orpo_cli_refuses_packing(tiny_model_dir, pref_file, tmp_path):
    from typer.testing import CliRunner

    from knowlm.cli.main import app

    result = CliRunner().invoke(app, ["train", "orpo", "--model", str(tiny_model_dir), "--data", pref_file,
                                      "--output", str(tmp_path / "o"), "--packing"])
    assert "--packing does not apply" in str(result.exception)
