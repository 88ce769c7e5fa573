"""End-to-end recipes on the tiny model (CPU): loss falls, exact resume, LoRA round trip, errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from knowlm.errors import KnowlmError
from knowlm.train import PretrainConfig, SFTConfig, pretrain, sft
from knowlm.train.metrics import read_metrics


def test_pretrain_loss_falls_and_writes_a_described_output(tiny_model_dir, corpus_prefix, tmp_path, artifacts_dir):
    out = tmp_path / "pt"
    summary = pretrain(PretrainConfig(
        model=str(tiny_model_dir), data=[corpus_prefix], output=str(out), seq_len=48, micro_batch_size=4,
        gradient_accumulation_steps=2, max_steps=20, learning_rate=3e-3, warmup_steps=2, logging_steps=2,
        eval_split=0.2, eval_steps=10, packing=True, strategy="single"), quiet=True)
    records = read_metrics(out)
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0] - 1.0, losses
    assert summary["eval_loss"] is not None and 0 < summary["eval_loss"] < 20  # held-out documents
    assert [r["step"] for r in records if "eval_loss" in r] == [10, 20]
    first = next(r for r in records if "loss" in r)
    assert first["lr"] > 0 and first["tokens_per_s"] > 0 and first["tokens"] > 0 and "mfu" not in first  # no GPU
    png = out / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shutil.copy(png, artifacts_dir / "train_pretrain_loss.png")
    manifest = json.loads((out / "knowlm.json").read_text())
    assert manifest["produced_by"] == "knowlm train pretrain" and manifest["checksums"]
    from knowlm.models import load

    model, _ = load(str(out))
    assert model.config.architectures == ["LlamaForCausalLM"]


def _sft_cfg(model_dir, data, out, **extra) -> SFTConfig:
    base = dict(model=str(model_dir), data=[data], output=str(out), method="lora", lora_dropout=0.1,
                micro_batch_size=2, gradient_accumulation_steps=2, max_steps=6, learning_rate=5e-3, warmup_steps=1,
                cutoff_len=128, logging_steps=1, save_steps=2, val_size=4, eval_steps=3, template="llama2",
                group_by_length=True, strategy="single")
    base.update(extra)
    return SFTConfig(**base)


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, short_sft_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "lora"
    return out, sft(_sft_cfg(tiny_model_dir, short_sft_file, out), quiet=True)


def test_resume_after_stop_matches_uninterrupted_run(lora_run, tiny_model_dir, short_sft_file, tmp_path):
    """Stop at step 5 (last checkpoint: 4), resume: same losses, eval loss and adapter as one straight run."""
    straight_dir, straight = lora_run
    out = tmp_path / "resumed"
    stopped = sft(_sft_cfg(tiny_model_dir, short_sft_file, out, stop_at_step=5), quiet=True)
    assert stopped["stopped_early"] and not (out / "knowlm.json").exists()
    with pytest.raises(KnowlmError, match="--resume"):
        sft(_sft_cfg(tiny_model_dir, short_sft_file, out), quiet=True)
    resumed = sft(_sft_cfg(tiny_model_dir, short_sft_file, out, resume=True), quiet=True)
    assert resumed["resumed_from"].endswith("step-00000004")
    assert resumed["final_loss"] == pytest.approx(straight["final_loss"], abs=1e-6)
    assert resumed["eval_loss"] == pytest.approx(straight["eval_loss"], abs=1e-6)
    assert resumed["tokens"] == straight["tokens"]
    a, b = read_metrics(straight_dir), read_metrics(out)
    assert [r["step"] for r in a] == [r["step"] for r in b]  # the killed run's extra step-5 line was dropped
    assert [r.get("loss") for r in a] == pytest.approx([r.get("loss") for r in b], abs=1e-6)
    from safetensors.torch import load_file

    wa, wb = load_file(straight_dir / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    assert len([p for p in (out / "checkpoints").iterdir()]) <= 2  # save_total_limit


def test_lora_adapter_round_trip_and_template(lora_run, tiny_model_dir):
    out, summary = lora_run
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    weights = load_file(out / "adapter_model.safetensors")
    projections = {k.split(".")[-3] for k in weights if "lora_A" in k}
    assert projections == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert any(float(v.abs().sum()) > 0 for k, v in weights.items() if "lora_B" in k)  # trained, not the zero init
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(out))
    loaded = peft_model.state_dict()
    key = next(k for k in weights if "lora_B" in k)
    match = [k for k in loaded if k.endswith(key.replace(".weight", ".default.weight").split("base_model.model.")[-1])]
    assert match and torch.equal(loaded[match[0]], weights[key])
    from knowlm.models import load, resolve_template

    model, _ = load(str(tiny_model_dir), adapter=str(out))
    assert model.knowlm_template == "llama2" == resolve_template(str(tiny_model_dir), str(out))
    manifest = json.loads((out / "knowlm.json").read_text())
    assert manifest["base_model"] == str(tiny_model_dir) and manifest["adapter"] is True
    assert summary["trainable_params"] < summary["total_params"] / 4


def test_full_sft_with_packing(tiny_model_dir, sft_file, tmp_path):
    out = tmp_path / "full"
    summary = sft(_sft_cfg(tiny_model_dir, sft_file, out, method="full", packing=True, group_by_length=False,
                           save_steps=0, max_steps=2, gradient_accumulation_steps=1, cutoff_len=384,
                           template="alpaca"), quiet=True)
    assert summary["trainable_params"] == summary["total_params"]
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    from knowlm.models import load

    model, _ = load(str(out))
    assert model.knowlm_template == "alpaca"


def test_qlora_without_cuda_is_a_clear_error(tiny_model_dir, sft_file, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    with pytest.raises(KnowlmError, match="CUDA"):
        sft(_sft_cfg(tiny_model_dir, sft_file, tmp_path / "q", method="qlora"), quiet=True)
    assert not (tmp_path / "q").exists()


def test_logged_loss_covers_every_step_and_the_title_says_what_ran(tiny_model_dir, corpus_prefix, tmp_path):
    from knowlm.train.recipe import _title

    def run(name, logging_steps):
        pretrain(PretrainConfig(model=str(tiny_model_dir), data=[corpus_prefix], output=str(tmp_path / name), seq_len=32,
                                micro_batch_size=2, max_steps=6, learning_rate=2e-3, logging_steps=logging_steps,
                                strategy="single"), quiet=True)
        return [r for r in read_metrics(tmp_path / name) if "loss" in r]

    every, windows = run("every", 1), run("windows", 3)
    assert [r["step"] for r in windows] == [3, 6]
    for record in windows:  # the mean over the 3 steps of the window, not the logging step's own loss
        own = [r["loss"] for r in every if record["step"] - 3 < r["step"] <= record["step"]]
        assert record["loss"] == pytest.approx(sum(own) / 3, abs=1e-6)
        assert record["step_loss"] == pytest.approx(own[-1], abs=1e-6)
    cfg = SFTConfig(model="runs/pretrain", data=["d"], output="runs/sft")
    assert _title("sft", cfg, "alpaca") == "sft (lora, alpaca) of pretrain -> sft"


def test_packed_blend_resumes_exactly(tiny_model_dir, short_sft_file, sft_file, tmp_path):
    """Packed rows keep per-source positions in the checkpoint: stop at 3, resume, same as straight."""
    def cfg(out, **extra):
        return SFTConfig(model=str(tiny_model_dir), data=["0.6", short_sft_file, "0.4", sft_file], output=str(out),
                         micro_batch_size=2, max_steps=5, learning_rate=5e-3, cutoff_len=384, packing=True,
                         blend_by="tokens", save_steps=2, logging_steps=1, strategy="single", **extra)

    straight = sft(cfg(tmp_path / "straight"), quiet=True)
    sft(cfg(tmp_path / "resumed", stop_at_step=3), quiet=True)
    resumed = sft(cfg(tmp_path / "resumed", resume=True), quiet=True)
    assert resumed["resumed_from"].endswith("step-00000002")
    assert resumed["final_loss"] == pytest.approx(straight["final_loss"], abs=1e-6)
    assert resumed["tokens"] == straight["tokens"]
    state = json.loads((tmp_path / "resumed" / "checkpoints" / "step-00000004" / "trainer_state.json").read_text())
    assert len(state["stream"]["source_positions"]) == 2 and sum(state["stream"]["source_positions"]) > 8
