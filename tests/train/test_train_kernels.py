"""GPU-readiness checked on CPU: training never resolves hub kernels unless asked, packed rows give
the unpacked loss with every attention implementation (no dense 4-D mask), the checkpointing
policy, per-layer compile and the batch prefetcher."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from knowlm.errors import KnowlmError
from knowlm.train import SFTConfig, sft


def _cfg(model, data, out, **extra) -> SFTConfig:
    base = dict(model=str(model), data=[data], output=str(out), micro_batch_size=2, max_steps=1, cutoff_len=192,
                strategy="single", logging_steps=1)
    return SFTConfig(**{**base, **extra})


def test_training_never_resolves_hub_kernels(tiny_model_dir, short_sft_file, tmp_path, monkeypatch):
    import transformers.integrations.hub_kernels as hub
    import transformers.modeling_utils as modeling_utils

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("Version 2 of 'kernels-community/rotary' is not available in the local cache")

    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)  # transformers' default: enabled when `kernels` is installed
    monkeypatch.delenv("KNOWLM_HUB_KERNELS", raising=False)
    monkeypatch.setattr(modeling_utils, "kernelize", refuse)
    monkeypatch.setattr(hub, "kernelize", refuse)
    summary = sft(_cfg(tiny_model_dir, short_sft_file, tmp_path / "off"), quiet=True)
    assert summary["steps"] == 1 and calls == []

    asked = []
    monkeypatch.setattr(modeling_utils, "kernelize", lambda model, *a, **k: asked.append(type(model).__name__) or model)
    from knowlm.models.attention import hub_kernels_enabled, load_kwargs

    assert load_kwargs("sdpa", "cpu", False, hub_kernels=True)["use_kernels"] is True
    monkeypatch.setenv("KNOWLM_HUB_KERNELS", "1")
    assert hub_kernels_enabled()
    sft(_cfg(tiny_model_dir, short_sft_file, tmp_path / "on"), quiet=True)
    assert asked  # opting in reaches transformers' kernelize


def _examples(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for length in (7, 12, 5, 9):
        ids = rng.integers(3, 2000, size=length)
        labels = ids.copy()
        labels[:2] = -100
        out.append((ids, labels))
    return out


@pytest.mark.parametrize("impl", ["sdpa", "eager", pytest.param("flex_attention", marks=pytest.mark.slow)])  # flex compiles: ~50 s on CPU
def test_packed_loss_equals_unpacked_for_each_attention(tiny_model_dir, impl):
    from transformers import AutoModelForCausalLM

    from knowlm.models.attention import load_kwargs
    from knowlm.train.batching import collate
    from knowlm.train.distributed import DistEnv, wrap
    from knowlm.train.loss import install_loss_head

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), **load_kwargs(impl, "cpu", False))
    assert model.config._attn_implementation == impl
    model.config.use_cache = False
    install_loss_head(model, chunk=-1)
    runtime = wrap("single", DistEnv(), model, SFTConfig(model="m", data=["d"], output="o"), "fp32", None)
    examples = _examples()
    unpacked = collate([[e] for e in examples], 64, 0, packing=False)
    packed = collate([examples[:3], examples[3:]], 64, 0, packing=True)
    assert "attention_mask" not in packed  # boundaries travel as position_ids only
    with torch.no_grad():  # flex-attention has no CPU backward (the GPU test trains with it)
        a, b = runtime.token_nll(unpacked), runtime.token_nll(packed)
    assert a.shape == b.shape and float(a.sum()) == pytest.approx(float(b.sum()), abs=1e-4)
    assert torch.allclose(torch.sort(a).values, torch.sort(b).values, atol=1e-4)


def test_attention_choices_fail_clearly_on_cpu():
    from knowlm.models.attention import resolve_attn_implementation

    assert resolve_attn_implementation("auto", "cpu", True) == "sdpa"
    with pytest.raises(KnowlmError, match="needs a CUDA GPU"):
        resolve_attn_implementation("flash_attention_2", "cpu", True)
    with pytest.raises(KnowlmError, match="unknown --attn-implementation"):
        resolve_attn_implementation("xformers", "cpu", True)


def test_checkpointing_policy_and_per_layer_compile(tiny_model_dir, short_sft_file, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from knowlm.train.modeling import checkpoint_layers, decoder_layers

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), num_hidden_layers=4, use_kernels=False)
    assert checkpoint_layers(model, every=2) == 2
    assert [layer.gradient_checkpointing for layer in decoder_layers(model)] == [True, False, True, False]
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    sft(_cfg(tiny_model_dir, short_sft_file, tmp_path / "c", compile=True, gradient_checkpointing=True, checkpoint_every=2),
        quiet=True)
    assert compiled == ["LlamaDecoderLayer"] * 2  # each decoder layer in place: names and state dicts unchanged


def test_prefetcher_yields_the_same_batches_and_states(short_sft_file, tiny_tokenizer):
    from knowlm.train.batching import ExampleStream, Prefetcher
    from knowlm.train.data_sft import load_sft_sets
    from knowlm.train.sampling import BlendedExamples

    train, _, _, _ = load_sft_sets([short_sft_file], tiny_tokenizer, "alpaca", 192, False, 0, 0)

    def items(depth):
        stream = ExampleStream(BlendedExamples(train, None, 3), 192, micro_batch_size=2, packing=True)
        feed = Prefetcher(stream, per_step=2, steps=5, depth=depth)
        try:
            return [feed.next() for _ in range(5)]
        finally:
            feed.close()

    sync, ahead = items(0), items(2)
    for (b0, s0), (b1, s1) in zip(sync, ahead):
        assert s0 == s1 and all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(b0, b1))
