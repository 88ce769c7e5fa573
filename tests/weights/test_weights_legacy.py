"""KnowLM's real release layout: a transformers-4.28 diff (``.bin`` shards + index + ``inv_freq`` buffers)
recovered against a modern base that has no buffers, with KnowLM's naive sum reproduced."""

import json

import pytest
import torch

from knowlm.errors import KnowlmError
from knowlm.weights import make_diff, recover
from knowlm.weights.legacy import knowlm_sum, state_dict_order
from tests.weights.weights_helpers import leftovers, state_of

PER_LAYER_428 = ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                 "self_attn.rotary_emb.inv_freq", "mlp.gate_proj.weight", "mlp.down_proj.weight", "mlp.up_proj.weight",
                 "input_layernorm.weight", "post_attention_layernorm.weight"]


def order_428(n_layers):
    """state_dict() order of transformers 4.28's LlamaForCausalLM, written out by hand."""
    names = ["model.embed_tokens.weight"]
    for i in range(n_layers):
        names += [f"model.layers.{i}.{suffix}" for suffix in PER_LAYER_428]
    return names + ["model.norm.weight", "lm_head.weight"]


def inv_freq_428(config):
    # transformers 4.28 LlamaRotaryEmbedding.__init__, verbatim arithmetic
    dim = config["hidden_size"] // config["num_attention_heads"]
    return 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))


def write_428_diff(base_dir, target_dir, out):
    """What KnowLM's make_diff saved under 4.28: state_dict(tuned) - state_dict(raw), buffers included (zero),
    as two pytorch_model-*.bin shards in state-dict order with a sorted pytorch_model.bin.index.json."""
    config = json.loads((target_dir / "config.json").read_text())
    base, target = state_of(base_dir), state_of(target_dir)
    inv = inv_freq_428(config)
    names = order_428(config["num_hidden_layers"])
    diff = {n: (torch.zeros_like(inv) if n.endswith("inv_freq") else target[n] - base[n]) for n in names}
    out.mkdir()
    half = len(names) // 2
    shards = {"pytorch_model-00001-of-00002.bin": names[:half], "pytorch_model-00002-of-00002.bin": names[half:]}
    for file, members in shards.items():
        torch.save({n: diff[n] for n in members}, out / file)
    weight_map = {n: f for f, members in shards.items() for n in members}
    (out / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"metadata": {"total_size": sum(t.numel() * 4 for t in diff.values())}, "weight_map": dict(sorted(weight_map.items()))},
        indent=2, sort_keys=True))
    old_config = {k: v for k, v in config.items() if k not in ("dtype", "rope_parameters", "rope_theta")}
    old_config.update({"torch_dtype": "float32", "transformers_version": "4.28.1", "architectures": ["LlamaForCausalLM"]})
    (out / "config.json").write_text(json.dumps(old_config))
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        if (target_dir / name).is_file():
            (out / name).write_bytes((target_dir / name).read_bytes())
    return diff, names, inv


def knowlm_allsum(base_dir, diff, names, inv):
    """tools/weight_diff.py recover() under 4.28, verbatim: add the raw state dict, sum in float32."""
    base = state_of(base_dir)
    recovered = {n: (diff[n] + (inv if n.endswith("inv_freq") else base[n])) for n in names}
    return float(sum(recovered[key].sum() for key in recovered))


def test_428_diff_recovers_against_a_modern_base_with_knowlm_sum(tiny_model_dir, weights_target_dir, tmp_path):
    diff, names, inv = write_428_diff(tiny_model_dir, weights_target_dir, tmp_path / "zhixi-diff")
    assert not any(n.endswith("inv_freq") for n in state_of(tiny_model_dir))  # the modern base has no buffers
    expected = knowlm_allsum(tiny_model_dir, diff, names, inv)
    buffers_part = 2 * float(inv.sum())
    assert buffers_part > 1.0  # without the buffers the check would be off by far more than its tolerance

    summary = recover(tiny_model_dir, tmp_path / "zhixi-diff", tmp_path / "zhixi", expected_sum=round(expected, 4))
    assert summary.mode == "legacy" and summary.skipped_buffers == 2 and summary.tensors == len(names) - 2
    assert abs(summary.weight_sum - expected) < 1e-2 and "passed" in summary.verification
    got, want = state_of(tmp_path / "zhixi"), state_of(weights_target_dir)
    assert set(got) == set(want)  # no inv_freq written: transformers >= 4.31 would report them as unexpected
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=0)

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "zhixi"))
    reference = AutoModelForCausalLM.from_pretrained(str(weights_target_dir))
    ids = torch.tensor([[1, 5, 9, 200, 31]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-5, rtol=0)

    with pytest.raises(KnowlmError, match="naive integrity check failed"):  # the sum without buffers is refused
        recover(tiny_model_dir, tmp_path / "zhixi-diff", tmp_path / "bad", expected_sum=expected - buffers_part)
    assert not (tmp_path / "bad").exists() and leftovers(tmp_path) == []


def test_428_base_and_target_both_ways(tiny_model_dir, weights_target_dir, tmp_path):
    """A 4.28-era base (with buffers) against a modern diff, and a 4.28-era target diffed against a modern base."""
    config = json.loads((tiny_model_dir / "config.json").read_text())
    inv = inv_freq_428(config)
    old_base = tmp_path / "llama-428"
    old_base.mkdir()
    state = state_of(tiny_model_dir)
    state.update({f"model.layers.{i}.self_attn.rotary_emb.inv_freq": inv.clone() for i in range(config["num_hidden_layers"])})
    torch.save(state, old_base / "pytorch_model.bin")
    (old_base / "config.json").write_text((tiny_model_dir / "config.json").read_text())

    d = make_diff(tiny_model_dir, weights_target_dir, tmp_path / "modern-diff")
    r = recover(old_base, tmp_path / "modern-diff", tmp_path / "r1")
    assert r.verified == r.tensors and r.ignored_base_tensors == []  # the base's buffers are neither used nor "ignored weights"

    old_target = tmp_path / "zhixi-428"
    old_target.mkdir()
    target = state_of(weights_target_dir)
    target.update({k: v for k, v in state.items() if k.endswith("inv_freq")})
    torch.save(target, old_target / "pytorch_model.bin")
    (old_target / "config.json").write_text((weights_target_dir / "config.json").read_text())
    d = make_diff(tiny_model_dir, old_target, tmp_path / "diff-from-428")
    assert d.skipped_buffers == 2 and d.tensors == len(state_of(weights_target_dir))
    recover(tiny_model_dir, tmp_path / "diff-from-428", tmp_path / "r2")
    want = state_of(weights_target_dir)
    got = state_of(tmp_path / "r2")
    assert set(got) == set(want) and all(torch.equal(got[n], want[n]) for n in want)


def test_state_dict_order_and_float32_accumulation():
    names = ["lm_head.weight", "model.layers.10.mlp.up_proj.weight", "model.layers.2.self_attn.rotary_emb.inv_freq",
             "model.norm.weight", "model.layers.2.self_attn.q_proj.weight", "model.embed_tokens.weight"]
    assert state_dict_order(names) == ["model.embed_tokens.weight", "model.layers.2.self_attn.q_proj.weight",
                                       "model.layers.2.self_attn.rotary_emb.inv_freq", "model.layers.10.mlp.up_proj.weight",
                                       "model.norm.weight", "lm_head.weight"]
    sums = {"model.embed_tokens.weight": 94000.0, "model.norm.weight": 0.003, "lm_head.weight": 0.003}
    # float32 accumulation loses both 0.003s (ulp at 94000 is 0.0078); a float64 total would not
    assert knowlm_sum(sums) == 94000.0
