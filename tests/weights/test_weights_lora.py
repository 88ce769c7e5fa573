"""Streaming LoRA merge equals PEFT's merge_and_unload; no-op and mismatched merges are refused."""

import json

import pytest
import torch

from knowlm.errors import KnowlmError
from knowlm.weights import merge_lora
from tests.weights.weights_helpers import leftovers, peft_adapter, state_of


def _make_adapter(base_dir, out_dir, trained=True, **config):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                      task_type="CAUSAL_LM", **config)
    peft_model = get_peft_model(model, lora)
    if trained:
        gen = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name or "modules_to_save" in name:
                    p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    peft_model.save_pretrained(str(out_dir))
    return peft_model


@pytest.mark.parametrize("extra", [
    {"modules_to_save": ["lm_head"]},
    {"use_rslora": True, "alpha_pattern": {"down_proj": 4}, "rank_pattern": {"q_proj": 2}},
], ids=["modules_to_save", "rslora+patterns"])
def test_merge_equals_peft(tiny_model_dir, tmp_path, extra):
    peft_model = _make_adapter(tiny_model_dir, tmp_path / "adapter", **extra)
    expected = {k: v for k, v in peft_model.merge_and_unload().state_dict().items()}
    summary = merge_lora(tiny_model_dir, tmp_path / "adapter", tmp_path / "merged", max_shard_size="150KB")
    assert summary.merged == 14 and summary.largest_change > 0
    got = state_of(tmp_path / "merged")
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, atol=1e-5, rtol=0, msg=name)
    assert (tmp_path / "merged" / "tokenizer.model").is_file()
    manifest = json.loads((tmp_path / "merged" / "knowlm.json").read_text())
    assert manifest["adapter"] == str(tmp_path / "adapter") and manifest["lora"]["merged_tensors"] == 14


def test_fan_in_fan_out_layout(tmp_path):
    """A Conv1D-style (in, out) weight: W' = W + scaling * (B @ A).T."""
    from safetensors.torch import save_file

    base, adapter = tmp_path / "base", tmp_path / "adapter"
    base.mkdir(), adapter.mkdir()
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, 10, generator=gen)  # (in=6, out=10)
    save_file({"h.0.attn.c_attn.weight": w, "h.0.ln.weight": torch.ones(6)}, str(base / "model.safetensors"))
    (base / "config.json").write_text('{"model_type": "gpt2"}')
    A, B = torch.randn(2, 6, generator=gen), torch.randn(10, 2, generator=gen)
    save_file({"base_model.model.h.0.attn.c_attn.lora_A.weight": A, "base_model.model.h.0.attn.c_attn.lora_B.weight": B},
              str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "fan_in_fan_out": True}))
    merge_lora(base, adapter, tmp_path / "out", chunk_bytes=64)  # tiny chunks: several row blocks
    got = state_of(tmp_path / "out")
    torch.testing.assert_close(got["h.0.attn.c_attn.weight"], w + 2.0 * (B @ A).T, atol=1e-6, rtol=0)
    assert torch.equal(got["h.0.ln.weight"], torch.ones(6))


def test_untrained_adapter_is_a_refused_noop(tiny_model_dir, tmp_path):
    _make_adapter(tiny_model_dir, tmp_path / "adapter", trained=False)
    with pytest.raises(KnowlmError, match="unchanged"):
        merge_lora(tiny_model_dir, tmp_path / "adapter", tmp_path / "merged")
    assert not (tmp_path / "merged").exists() and leftovers(tmp_path) == []
    merge_lora(tiny_model_dir, tmp_path / "adapter", tmp_path / "merged", allow_noop=True)
    assert (tmp_path / "merged" / "knowlm.json").is_file()


def test_mismatched_adapter_and_quantised_base_are_refused(tiny_model_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    _make_adapter(tiny_model_dir, tmp_path / "adapter")
    path = tmp_path / "adapter" / "adapter_model.safetensors"
    state = load_file(str(path))
    save_file({k.replace("model.layers", "model.blocks"): v for k, v in state.items()}, str(path))
    with pytest.raises(KnowlmError, match="no matching base tensor"):
        merge_lora(tiny_model_dir, tmp_path / "adapter", tmp_path / "merged")
    quant = tmp_path / "quant"
    shutil.copytree(tiny_model_dir, quant)
    config = json.loads((quant / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_8bit": True}
    (quant / "config.json").write_text(json.dumps(config))
    with pytest.raises(KnowlmError, match="quantised"):
        merge_lora(quant, tmp_path / "adapter", tmp_path / "merged")


def test_demo_stage_merges_and_exports(tiny_model_dir, tmp_path):
    from knowlm.weights import demo_stage

    _make_adapter(tiny_model_dir, tmp_path / "adapter")
    summary = demo_stage(tmp_path / "work", tiny_model_dir, tmp_path / "adapter")
    assert summary["merged_tensors"] == 14 and summary["largest_lora_change"] > 0
    assert summary["gguf_bytes"] > 0 and summary["gguf_max_logit_diff"] < 0.05
    assert (tmp_path / "work" / "merged" / "knowlm.json").is_file()


@pytest.mark.parametrize("config,resize_to", [
    ({"target_modules": ["q_proj", "v_proj", "embed_tokens", "lm_head"]}, None),
    ({"target_modules": ["q_proj", "v_proj", "embed_tokens", "lm_head"]}, 3008),
    ({"target_modules": ["q_proj", "down_proj"], "modules_to_save": ["embed_tokens", "lm_head"]}, None),
    ({"target_modules": ["q_proj"], "trainable_token_indices": [3, 17, 2999]}, None),
], ids=["lora-embed-lm_head", "lora-embed-lm_head-resized", "modules_to_save-embed-lm_head", "trainable-tokens"])
def test_peft_embedding_and_lm_head_adapters_merge_like_peft(tiny_model_dir, tmp_path, config, resize_to):
    from safetensors import safe_open

    expected = peft_adapter(tiny_model_dir, tmp_path / "adapter", resize_to=resize_to, **config)
    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    if "embed_tokens" in config["target_modules"]:  # PEFT saves the embedding's and head's base weights
        assert "base_model.model.model.embed_tokens.base_layer.weight" in keys
        assert "base_model.model.lm_head.base_layer.weight" in keys
    summary = merge_lora(tiny_model_dir, tmp_path / "adapter", tmp_path / "merged", chunk_bytes=4096)
    got = state_of(tmp_path / "merged")
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        assert got[name].shape == tensor.shape, name
        torch.testing.assert_close(got[name], tensor, atol=1e-5, rtol=0, msg=name)
    assert summary.largest_change > 0
    saved_config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert saved_config["vocab_size"] == (resize_to or 3000)
    if resize_to:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"))
        assert model.get_input_embeddings().weight.shape[0] == resize_to
