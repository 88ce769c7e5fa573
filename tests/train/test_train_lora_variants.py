"""NEFTune noise, DoRA, rsLoRA, LoRA+ learning rates and --merge-at-end (merged model == base + adapter)."""

from __future__ import annotations

import json

import pytest
import torch

from knowlm.train import SFTConfig, sft


def test_neftune_noise_is_bounded_and_only_in_training(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from knowlm.train.modeling import add_neftune

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), use_kernels=False)
    embed = model.get_input_embeddings()
    ids = torch.arange(3, 23)[None]
    clean = embed(ids).detach()
    add_neftune(model, alpha=5.0)
    model.eval()
    assert torch.equal(embed(ids), clean)
    model.train()
    noise = embed(ids).detach() - clean
    bound = 5.0 / (20 * clean.shape[-1]) ** 0.5  # alpha / sqrt(seq_len * hidden), as transformers' Trainer
    assert 0 < float(noise.abs().max()) <= bound * (1 + 1e-5)
    assert float(noise.abs().mean()) > bound / 4  # uniform in [-bound, bound]: mean |x| = bound / 2


def test_loraplus_groups_and_schedule(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from knowlm.train.loop import LRSchedule
    from knowlm.train.modeling import add_lora
    from knowlm.train.optim import param_groups

    cfg = SFTConfig(model=str(tiny_model_dir), data=["d"], output="o", loraplus_lr_ratio=16)
    model = add_lora(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), use_kernels=False), cfg)
    groups = param_groups(model, 16)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(".lora_B." in names[id(p)] for p in groups[1]["params"]) and groups[1]["lr_scale"] == 16
    assert all(".lora_A." in names[id(p)] for p in groups[0]["params"])
    optimizer = torch.optim.AdamW(groups, lr=1.0)
    schedule = LRSchedule(optimizer, 1e-4, 0, 10, "constant", 0.0)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-4, 16e-4])
    schedule.step()
    assert optimizer.param_groups[1]["lr"] == pytest.approx(16e-4)


def _logits(directory, ids, adapter=None):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(directory), use_kernels=False)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


@pytest.mark.parametrize("variant", [{"use_rslora": True, "loraplus_lr_ratio": 16.0}, {"use_dora": True}])
def test_variants_train_and_merge_at_end(tiny_model_dir, short_sft_file, tmp_path, variant):
    out = tmp_path / "v"
    summary = sft(SFTConfig(model=str(tiny_model_dir), data=[short_sft_file], output=str(out), micro_batch_size=2,
                            max_steps=3, learning_rate=1e-2, cutoff_len=192, strategy="single", merge_at_end=True,
                            lora_dropout=0.0, **variant), quiet=True)
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["use_dora"] == variant.get("use_dora", False) and adapter["use_rslora"] == variant.get("use_rslora", False)
    merged = out / "merged"
    assert summary["merged"] == str(merged) and (merged / "knowlm.json").is_file()
    ids = torch.arange(5, 30)[None]
    tuned, merged_logits, base = _logits(tiny_model_dir, ids, out), _logits(merged, ids), _logits(tiny_model_dir, ids)
    assert torch.allclose(merged_logits, tuned, atol=1e-4)
    assert not torch.allclose(merged_logits, base, atol=1e-4)  # the adapter did change the model


def _fake_module(name: str, **attrs):
    import importlib.machinery
    import types

    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attrs)
    return module


def test_wandb_and_mlflow_reporters_get_every_record(tiny_model_dir, short_sft_file, tmp_path, monkeypatch):
    import sys

    calls: dict[str, list] = {"wandb": [], "mlflow": [], "closed": []}

    class Run:
        def log(self, values, step):
            calls["wandb"].append((step, values))

        def finish(self):
            calls["closed"].append("wandb")

    monkeypatch.setitem(sys.modules, "wandb", _fake_module("wandb", init=lambda **kw: Run()))
    monkeypatch.setitem(sys.modules, "mlflow", _fake_module(
        "mlflow", start_run=lambda **kw: None, log_params=lambda p: None, end_run=lambda: calls["closed"].append("mlflow"),
        log_metrics=lambda values, step: calls["mlflow"].append((step, values))))
    sft(SFTConfig(model=str(tiny_model_dir), data=[short_sft_file], output=str(tmp_path / "r"), micro_batch_size=2,
                  max_steps=2, cutoff_len=192, strategy="single", logging_steps=1, report_to="wandb,mlflow"), quiet=True)
    assert [step for step, _ in calls["wandb"]] == [1, 2] == [step for step, _ in calls["mlflow"]]
    assert "loss" in calls["wandb"][0][1] and "lr" in calls["mlflow"][1][1]
    assert sorted(calls["closed"]) == ["mlflow", "wandb"]
