"""A fake two-shard Meta checkpoint built from a tiny HF LLaMA converts back to identical weights and logits."""

import json

import pytest
import torch

from knowlm.errors import KnowlmError
from knowlm.weights import convert_meta
from knowlm.weights.meta import unpermute_rotary
from tests.weights.weights_helpers import state_of


def write_meta_checkpoint(hf_dir, out_dir, n_shards=2):
    """The inverse of the conversion, written independently: HF names -> Meta names, split for model parallelism."""
    config = json.loads((hf_dir / "config.json").read_text())
    sd = state_of(hf_dir)
    n_heads, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    shards = [{} for _ in range(n_shards)]

    def split(name, tensor, dim):
        for i, piece in enumerate(tensor.chunk(n_shards, dim=dim) if dim is not None else [tensor] * n_shards):
            shards[i][name] = piece.clone()

    split("tok_embeddings.weight", sd["model.embed_tokens.weight"], 1)
    split("norm.weight", sd["model.norm.weight"], None)
    split("output.weight", sd["lm_head.weight"], 0)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        split(f"layers.{i}.attention.wq.weight", unpermute_rotary(sd[p + "self_attn.q_proj.weight"], n_heads), 0)
        split(f"layers.{i}.attention.wk.weight", unpermute_rotary(sd[p + "self_attn.k_proj.weight"], n_kv), 0)
        split(f"layers.{i}.attention.wv.weight", sd[p + "self_attn.v_proj.weight"], 0)
        split(f"layers.{i}.attention.wo.weight", sd[p + "self_attn.o_proj.weight"], 1)
        split(f"layers.{i}.feed_forward.w1.weight", sd[p + "mlp.gate_proj.weight"], 0)
        split(f"layers.{i}.feed_forward.w2.weight", sd[p + "mlp.down_proj.weight"], 1)
        split(f"layers.{i}.feed_forward.w3.weight", sd[p + "mlp.up_proj.weight"], 0)
        split(f"layers.{i}.attention_norm.weight", sd[p + "input_layernorm.weight"], None)
        split(f"layers.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"], None)
    out_dir.mkdir(parents=True)
    for i, shard in enumerate(shards):
        torch.save(shard, out_dir / f"consolidated.{i:02d}.pth")
    params = {"dim": config["hidden_size"], "n_layers": config["num_hidden_layers"], "n_heads": n_heads, "n_kv_heads": n_kv,
              "vocab_size": -1, "multiple_of": 16, "norm_eps": config["rms_norm_eps"], "max_seq_len": config["max_position_embeddings"]}
    (out_dir / "params.json").write_text(json.dumps(params))
    (out_dir.parent / "tokenizer.model").write_bytes((hf_dir / "tokenizer.model").read_bytes())  # Meta keeps it one level up


@pytest.fixture(scope="module")
def gqa_model_dir(tiny_model_dir, tmp_path_factory):
    from knowlm.models.tiny import TinyConfig, build_model

    root = tmp_path_factory.mktemp("gqa")
    tok = root / "tok"  # tokenizer files only: build_model copies everything in tokenizer_dir
    tok.mkdir()
    for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_model_dir / name).is_file():
            (tok / name).write_bytes((tiny_model_dir / name).read_bytes())
    return build_model(root / "model", tokenizer_dir=tok, config=TinyConfig(num_key_value_heads=2, seed=5))


def test_two_shard_meta_checkpoint_converts_back(gqa_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    write_meta_checkpoint(gqa_model_dir, tmp_path / "llama" / "7B")
    summary = convert_meta(tmp_path / "llama" / "7B", tmp_path / "hf")
    assert summary.shards == 2 and summary.intermediate_size == 176
    want, got = state_of(gqa_model_dir), state_of(tmp_path / "hf")
    assert set(want) == set(got)
    for name in want:
        assert torch.equal(want[name], got[name]), name
    ids = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))("浙江大学 knowledge graph", return_tensors="pt").input_ids
    a = AutoModelForCausalLM.from_pretrained(str(gqa_model_dir)).eval()
    b = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    assert b.config.num_key_value_heads == 2
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)


def test_not_a_meta_checkpoint(tmp_path):
    with pytest.raises(KnowlmError, match="params.json"):
        convert_meta(tmp_path, tmp_path / "out")
