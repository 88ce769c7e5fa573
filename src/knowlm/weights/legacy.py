"""The transformers-4.28 layout of KnowLM's released diffs, and KnowLM's naive integrity sum.

KnowLM pinned transformers 4.28.1, whose LLaMA registered ``rotary_emb.inv_freq`` as a persistent
buffer: every checkpoint it saved -- the converted LLaMA base and the ZhiXi diff shards alike --
carries one ``model.layers.N.self_attn.rotary_emb.inv_freq`` per layer. Transformers >= 4.31 (and
``knowlm weights convert-meta``) neither save nor load them; they are recomputed from the config.
So recovery skips them in the output (and counts them), and rebuilds the base's copy from the
config where KnowLM's check needs its value.

KnowLM's check (``tools/weight_diff.py``)::

    allsum = sum(state_dict_recovered[key].sum() for key in state_dict_recovered)
    assert torch.allclose(allsum, torch.full_like(allsum, 94052.2891), atol=1e-2, rtol=0)

runs over the recovered model's *state dict* under 4.28 -- so it includes the 40 ``inv_freq``
buffers of the 13B model (about 298.4 of the 94052.29) -- and accumulates float32 per-tensor sums
in float32, in module order. :func:`knowlm_sum` reproduces exactly that arithmetic from per-tensor
float64 sums (each rounded to float32, as ``Tensor.sum()`` of a float32 tensor returns).
"""

from __future__ import annotations

import numpy as np
import torch

ROTARY_BUFFER_SUFFIX = ".rotary_emb.inv_freq"

# module registration order of transformers 4.28's LlamaDecoderLayer (= its state_dict order)
_LAYER_ORDER = (
    "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
    "self_attn.rotary_emb.inv_freq", "mlp.gate_proj.weight", "mlp.down_proj.weight", "mlp.up_proj.weight",
    "input_layernorm.weight", "post_attention_layernorm.weight",
)
_RANK = {name: i for i, name in enumerate(_LAYER_ORDER)}


def is_rotary_buffer(name: str) -> bool:
    return name.endswith(ROTARY_BUFFER_SUFFIX)


def rotary_inv_freq(config: dict) -> torch.Tensor:
    """The ``inv_freq`` buffer transformers 4.28 computed: ``1 / theta ** (arange(0, d, 2) / d)`` in float32."""
    n_head = int(config["num_attention_heads"])
    dim = int(config.get("head_dim") or int(config["hidden_size"]) // n_head)
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    theta = float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0)
    return 1.0 / (theta ** (torch.arange(0, dim, 2).float() / dim))


def state_dict_order(names: list[str]) -> list[str]:
    """``names`` in the state-dict order of a 4.28 ``LlamaForCausalLM`` (unknown names last, as given)."""

    def key(item: tuple[int, str]):
        index, name = item
        if name == "model.embed_tokens.weight":
            return (0, 0, 0, index)
        parts = name.split(".", 3)
        if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[2].isdigit():
            return (1, int(parts[2]), _RANK.get(parts[3], len(_RANK)), index)
        if name == "model.norm.weight":
            return (2, 0, 0, index)
        if name == "lm_head.weight":
            return (3, 0, 0, index)
        return (4, 0, 0, index)

    return [name for _, name in sorted(enumerate(names), key=key)]


def knowlm_sum(tensor_sums: dict[str, float]) -> float:
    """KnowLM's naive sum from exact per-tensor sums: each rounded to float32, accumulated in float32 in 4.28 order."""
    total = np.float32(0.0)
    for name in state_dict_order(list(tensor_sums)):
        total = np.float32(total + np.float32(tensor_sums[name]))
    return float(total)
