"""Memory-minded precision: a LoRA base stays in the compute dtype with fp32 adapters, outputs keep
the base dtype and use_cache, pure bf16 keeps no fp32 copy, 8-bit optimizers and trackers fail clearly."""

from __future__ import annotations

import json

import pytest
import torch

from knowlm.errors import KnowlmError
from knowlm.train import SFTConfig, sft
from knowlm.train.modeling import load_for_training


def _cfg(model, data, out, **extra) -> SFTConfig:
    base = dict(model=str(model), data=[data], output=str(out), micro_batch_size=2, max_steps=2, learning_rate=1e-3,
                cutoff_len=192, logging_steps=1, strategy="single")
    base.update(extra)
    return SFTConfig(**base)


def _dtypes(model, trainable: bool) -> set:
    return {p.dtype for p in model.parameters() if p.requires_grad == trainable}


def test_lora_keeps_the_base_in_the_compute_dtype(tiny_bf16_dir, short_sft_file, tmp_path):
    cpu = torch.device("cpu")
    model, _ = load_for_training(_cfg(tiny_bf16_dir, short_sft_file, tmp_path / "a", method="lora"), cpu, "bf16", "single")
    assert _dtypes(model, trainable=False) == {torch.bfloat16} and _dtypes(model, trainable=True) == {torch.float32}
    model, _ = load_for_training(_cfg(tiny_bf16_dir, short_sft_file, tmp_path / "b", method="lora"), cpu, "fp32", "single")
    assert _dtypes(model, trainable=False) == {torch.float32}
    model, _ = load_for_training(_cfg(tiny_bf16_dir, short_sft_file, tmp_path / "c", method="full"), cpu, "bf16", "single")
    assert _dtypes(model, trainable=True) == {torch.float32}  # full fine-tuning: fp32 master weights
    model, _ = load_for_training(_cfg(tiny_bf16_dir, short_sft_file, tmp_path / "d", method="lora"), cpu, "bf16-pure", "single")
    assert _dtypes(model, trainable=False) == _dtypes(model, trainable=True) == {torch.bfloat16}
    summary = sft(_cfg(tiny_bf16_dir, short_sft_file, tmp_path / "run", method="lora", precision="bf16"), quiet=True)
    assert summary["precision"] == "bf16" and 0 < summary["final_loss"] < 20


def test_full_output_keeps_base_dtype_and_use_cache(tiny_bf16_dir, short_sft_file, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "full"
    sft(_cfg(tiny_bf16_dir, short_sft_file, out, method="full", precision="bf16"), quiet=True)
    weights = load_file(out / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}  # trained with fp32 masters, saved like the base
    config = json.loads((out / "config.json").read_text())
    assert config["use_cache"] is True and config["dtype"] == "bfloat16"
    out32 = tmp_path / "full32"
    sft(_cfg(tiny_bf16_dir, short_sft_file, out32, method="full", save_dtype="float32"), quiet=True)
    assert {t.dtype for t in load_file(out32 / "model.safetensors").values()} == {torch.float32}


def test_pure_bf16_trains_without_fp32_copies(tiny_bf16_dir, short_sft_file, tmp_path):
    summary = sft(_cfg(tiny_bf16_dir, short_sft_file, tmp_path / "pure", method="full", precision="bf16-pure"), quiet=True)
    assert summary["precision"] == "bf16-pure" and 0 < summary["final_loss"] < 20


@pytest.mark.parametrize("extra, message", [
    ({"optim": "adamw_8bit"}, "--optim adamw_8bit"),
    ({"report_to": "wandb"}, "pip install wandb"),
    ({"report_to": "neptune"}, "unknown --report-to"),
    ({"precision": "bf16-pure", "deepspeed": "zero2", "strategy": "auto"}, "bf16-pure"),
])
def test_unavailable_options_fail_before_training(tiny_model_dir, short_sft_file, tmp_path, extra, message):
    pytest.importorskip("torch")
    if "optim" in extra:
        try:
            import bitsandbytes  # noqa: F401

            if torch.cuda.is_available():
                pytest.skip("bitsandbytes and CUDA present")
        except ImportError:
            pass
    if extra.get("report_to") == "wandb":
        import importlib.util

        if importlib.util.find_spec("wandb"):
            pytest.skip("wandb installed")
    with pytest.raises(KnowlmError, match=message):
        from knowlm.train.config import build_config

        cfg = build_config(SFTConfig, None, {**vars(_cfg(tiny_model_dir, short_sft_file, tmp_path / "x")), **extra})
        sft(cfg, quiet=True)
    assert not (tmp_path / "x" / "metrics.jsonl").exists()
