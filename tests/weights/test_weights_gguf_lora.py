"""LoRA adapters as GGUF adapters for llama.cpp's --lora: what llama.cpp adds (alpha / r * B @ A, per tensor)
equals PEFT's merged update, in llama.cpp's row order."""

import json

import numpy as np
import pytest

from knowlm.errors import KnowlmError
from knowlm.weights.gguf_export import permute_for_gguf
from knowlm.weights.gguf_lora import export_lora_gguf
from tests.weights.weights_helpers import peft_adapter, state_of

GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
              "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def test_llama_cpp_update_equals_peft_merge(cli, tiny_model_dir, tmp_path):
    import gguf

    config = json.loads((tiny_model_dir / "config.json").read_text())
    merged = peft_adapter(tiny_model_dir, tmp_path / "adapter", target_modules=list(m.split(".")[1] for m in GGUF_NAMES),
                      use_rslora=True, alpha_pattern={"down_proj": 4}, rank_pattern={"q_proj": 2}, seed=5)
    base = state_of(tiny_model_dir)
    result = cli("weights", "export-gguf", "-m", tmp_path / "adapter", "--base", tiny_model_dir, "-o", tmp_path / "adapter.gguf",
                 "--type", "f32")
    assert result.exit_code == 0 and "14 A/B pairs" in result.stdout
    reader = gguf.GGUFReader(str(tmp_path / "adapter.gguf"))
    kv = {f.name: f.contents() for f in reader.fields.values() if not f.name.startswith("GGUF.")}
    assert kv["general.type"] == "adapter" and kv["adapter.type"] == "lora" and kv["adapter.lora.alpha"] == 16.0
    assert kv["general.architecture"] == "llama" and "general.file_type" not in kv
    tensors = {t.name: np.asarray(t.data).reshape([int(d) for d in reversed(t.shape)]) for t in reader.tensors}
    assert len(tensors) == 28
    for i in range(config["num_hidden_layers"]):
        for hf, short in GGUF_NAMES.items():
            name = f"model.layers.{i}.{hf}.weight"
            a, b = tensors[f"blk.{i}.{short}.weight.lora_a"], tensors[f"blk.{i}.{short}.weight.lora_b"]
            llama_cpp_update = 16.0 / a.shape[0] * (b @ a)  # llama.cpp: scale = alpha / rank, rank from lora_a
            want = (merged[name] - base[name]).numpy()
            if hf == "self_attn.q_proj":
                want = permute_for_gguf(want, config["num_attention_heads"])
            elif hf == "self_attn.k_proj":
                want = permute_for_gguf(want, config["num_key_value_heads"])
            np.testing.assert_allclose(llama_cpp_update, want, atol=2e-6, err_msg=name)


def test_adapters_llama_cpp_cannot_carry_are_refused(tiny_model_dir, tmp_path):
    peft_adapter(tiny_model_dir, tmp_path / "adapter", target_modules=["q_proj"], modules_to_save=["lm_head"])
    with pytest.raises(KnowlmError, match=r"replaces whole tensors \(lm_head\.weight.*merge-lora"):
        export_lora_gguf(tmp_path / "adapter", tmp_path / "a.gguf", base=tiny_model_dir)
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "meta-llama/Llama-2-7b-hf"
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(KnowlmError, match="pass --base DIR"):
        export_lora_gguf(tmp_path / "adapter", tmp_path / "a.gguf")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".tmp-*"))
