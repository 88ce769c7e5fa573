"""On a CUDA GPU (skipped elsewhere): bf16 pretraining steps offline, packed LoRA SFT with each
attention implementation giving the unpacked loss, fused AdamW, QLoRA when bitsandbytes is there."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from knowlm.train import PretrainConfig, SFTConfig, pretrain, sft

pytestmark = pytest.mark.gpu


def test_bf16_pretraining_steps_offline(tiny_model_dir, corpus_prefix, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)  # the crash of issue 16 happened with kernels enabled
    summary = pretrain(PretrainConfig(model=str(tiny_model_dir), data=[corpus_prefix], output=str(tmp_path / "pt"),
                                      seq_len=48, micro_batch_size=4, max_steps=8, learning_rate=3e-3, precision="bf16",
                                      packing=True, strategy="single", logging_steps=1), quiet=True)
    assert summary["precision"] == "bf16" and summary["steps"] == 8 and np.isfinite(summary["final_loss"])


def _impls() -> list:
    impls = ["sdpa", "eager", "flex_attention"]
    if importlib.util.find_spec("flash_attn"):
        impls.append("flash_attention_2")
    return impls


@pytest.mark.parametrize("impl", _impls())
def test_packed_lora_sft_matches_unpacked_per_attention(tiny_model_dir, short_sft_file, tmp_path, impl):
    from transformers import AutoModelForCausalLM

    from knowlm.models.attention import load_kwargs
    from knowlm.train.batching import collate
    from knowlm.train.distributed import DistEnv, wrap
    from knowlm.train.loss import install_loss_head
    from knowlm.train.modeling import add_lora

    cfg = SFTConfig(model=str(tiny_model_dir), data=[short_sft_file], output=str(tmp_path / "x"), lora_dropout=0.0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.bfloat16, **load_kwargs(impl, "cuda", True))
    model.config.use_cache = False
    model = add_lora(model, cfg)
    install_loss_head(model, chunk=-1)
    runtime = wrap("single", DistEnv(device=torch.device("cuda")), model, cfg, "bf16", None)
    rng = np.random.default_rng(0)
    examples = [(ids, ids.copy()) for ids in (rng.integers(3, 2000, size=n) for n in (37, 64, 21, 50))]
    losses = {}
    for name, batch in (("unpacked", collate([[e] for e in examples], 256, 0, False)),
                        ("packed", collate([examples[:2], examples[2:]], 256, 0, True))):
        nll = runtime.token_nll(batch)
        nll.sum().backward()
        losses[name] = float(nll.sum())
        runtime.optimizer.zero_grad()
    assert losses["packed"] == pytest.approx(losses["unpacked"], rel=2e-2)  # bf16 kernels differ in rounding only
    run = sft(SFTConfig(model=str(tiny_model_dir), data=[short_sft_file], output=str(tmp_path / impl), max_steps=3,
                        micro_batch_size=2, cutoff_len=192, packing=True, precision="bf16", attn_implementation=impl,
                        strategy="single"), quiet=True)
    assert np.isfinite(run["final_loss"])


def test_fused_adamw_and_pinned_prefetch(tiny_model_dir, short_sft_file, tmp_path):
    from knowlm.train.distributed import DistEnv, wrap
    from knowlm.train.modeling import load_for_training

    cfg = SFTConfig(model=str(tiny_model_dir), data=[short_sft_file], output=str(tmp_path / "f"), method="full")
    model, _ = load_for_training(cfg, torch.device("cuda"), "bf16", "single")
    runtime = wrap("single", DistEnv(device=torch.device("cuda")), model, cfg, "bf16", None)
    assert runtime.optimizer.defaults.get("fused") is True
    summary = sft(SFTConfig(model=str(tiny_model_dir), data=[short_sft_file], output=str(tmp_path / "p"), max_steps=4,
                            micro_batch_size=2, cutoff_len=192, strategy="single", prefetch_steps=2), quiet=True)
    assert summary["steps"] == 4


@pytest.mark.skipif(not importlib.util.find_spec("bitsandbytes"), reason="needs bitsandbytes")
def test_qlora_and_8bit_optimizer(tiny_model_dir, short_sft_file, tmp_path):
    summary = sft(SFTConfig(model=str(tiny_model_dir), data=[short_sft_file], output=str(tmp_path / "q"), method="qlora",
                            max_steps=3, micro_batch_size=2, cutoff_len=192, strategy="single", optim="paged_adamw_8bit"),
                  quiet=True)
    assert np.isfinite(summary["final_loss"]) and (tmp_path / "q" / "adapter_model.safetensors").is_file()
