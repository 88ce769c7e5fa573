"""Meta's original LLaMA checkpoints (``consolidated.NN.pth`` + ``params.json``) to Hugging Face layout.

Meta shards a model for tensor parallelism: column-parallel weights (wq, wk, wv, w1, w3, output)
are split along their output rows, row-parallel ones (wo, w2) and the token embedding along
their input columns; norms are replicated. Meta's rotary embedding pairs adjacent features of a
head, Hugging Face's pairs the two halves, so q and k rows are permuted. Shards are memory-mapped
and each HF tensor is assembled, written and dropped before the next one (one tensor in memory).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from knowlm.errors import KnowlmError
from knowlm.models.manifest import write_manifest
from knowlm.utils.outputs import save_model_dir
from knowlm.weights.checkpoint_reader import Checkpoint
from knowlm.weights.checkpoint_writer import ShardedWriter
from knowlm.weights.tensor_io import dtype_from_name, dtype_name, progress_bar

# Meta name -> (HF name, concat dim across model-parallel shards or None if replicated)
_LAYER_MAP = {
    "attention.wq.weight": ("self_attn.q_proj.weight", 0),
    "attention.wk.weight": ("self_attn.k_proj.weight", 0),
    "attention.wv.weight": ("self_attn.v_proj.weight", 0),
    "attention.wo.weight": ("self_attn.o_proj.weight", 1),
    "feed_forward.w1.weight": ("mlp.gate_proj.weight", 0),
    "feed_forward.w2.weight": ("mlp.down_proj.weight", 1),
    "feed_forward.w3.weight": ("mlp.up_proj.weight", 0),
    "attention_norm.weight": ("input_layernorm.weight", None),
    "ffn_norm.weight": ("post_attention_layernorm.weight", None),
}


def permute_rotary(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Meta's interleaved rotary layout -> Hugging Face's half-split layout (rows of q or k)."""
    dim1, dim2 = w.shape
    return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)


def unpermute_rotary(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of :func:`permute_rotary` (HF -> Meta)."""
    dim1, dim2 = w.shape
    return w.view(n_heads, 2, dim1 // n_heads // 2, dim2).transpose(1, 2).reshape(dim1, dim2)


@dataclass
class ConvertSummary:
    output: str
    shards: int
    layers: int
    tensors: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    dtype: str
    seconds: float


def convert_meta(
    input: str | os.PathLike,
    output: str | os.PathLike,
    tokenizer: str | os.PathLike | None = None,
    dtype: str | None = None,
    max_position_embeddings: int | None = None,
    max_shard_size: str | int = "5GB",
    progress: bool = False,
) -> ConvertSummary:
    """Convert a Meta LLaMA checkpoint directory; ``tokenizer`` defaults to ``tokenizer.model`` in it or its parent."""
    started = time.perf_counter()
    src = Path(input)
    params_path = src / "params.json"
    if not params_path.is_file():
        raise KnowlmError(f"{src} is not a Meta LLaMA checkpoint (no params.json)")
    params = json.loads(params_path.read_text())
    shard_files = sorted(src.glob("consolidated.*.pth"))
    if not shard_files:
        raise KnowlmError(f"{src} has no consolidated.*.pth shards")
    shards = [Checkpoint(src, files=[f]) for f in shard_files]
    n = len(shards)
    try:
        dim, n_layers, n_heads = int(params["dim"]), int(params["n_layers"]), int(params["n_heads"])
    except KeyError as exc:
        raise KnowlmError(f"{params_path} lacks {exc}") from None
    n_kv = int(params.get("n_kv_heads") or n_heads)
    if n_heads % n or n_kv % n:
        raise KnowlmError(f"{n} shards cannot split {n_heads} heads / {n_kv} key-value heads evenly")
    head_dim = dim // n_heads

    def gather(meta_name: str, concat: int | None) -> torch.Tensor:
        for shard in shards:
            if meta_name not in shard:
                raise KnowlmError(f"{shard.files[0].name} lacks {meta_name}")
        if concat is None or n == 1:
            return shards[0].tensor(meta_name)
        return torch.cat([s.tensor(meta_name) for s in shards], dim=concat)

    emb_info = shards[0].info("tok_embeddings.weight") if "tok_embeddings.weight" in shards[0] else None
    if emb_info is None:
        raise KnowlmError(f"{shard_files[0].name} lacks tok_embeddings.weight")
    vocab_size = emb_info.shape[0]
    # LLaMA 1/2 shard the embedding by columns; LLaMA 3 by rows (vocab): tell by the shard shape
    emb_concat = 1 if emb_info.shape[1] * n == dim and n > 1 else 0
    if emb_concat == 0:
        vocab_size *= n
    intermediate = sum(s.info("layers.0.feed_forward.w1.weight").shape[0] for s in shards)
    out_dtype = dtype_from_name(dtype) or emb_info.dtype

    plan: list[tuple[str, callable]] = [("model.embed_tokens.weight", lambda: gather("tok_embeddings.weight", emb_concat))]
    for i in range(n_layers):
        for meta_suffix, (hf_suffix, concat) in _LAYER_MAP.items():
            meta_name = f"layers.{i}.{meta_suffix}"

            def make(meta_name=meta_name, concat=concat, hf_suffix=hf_suffix):
                w = gather(meta_name, concat)
                if hf_suffix.startswith("self_attn.q_proj"):
                    w = permute_rotary(w, n_heads)
                elif hf_suffix.startswith("self_attn.k_proj"):
                    w = permute_rotary(w, n_kv)
                return w

            plan.append((f"model.layers.{i}.{hf_suffix}", make))
    plan.append(("model.norm.weight", lambda: gather("norm.weight", None)))
    plan.append(("lm_head.weight", lambda: gather("output.weight", 0)))

    tok_path = Path(tokenizer) if tokenizer else next((p for p in (src / "tokenizer.model", src.parent / "tokenizer.model") if p.is_file()), None)
    if tokenizer and not Path(tokenizer).is_file():
        raise KnowlmError(f"tokenizer file not found: {tokenizer}")

    bar = progress_bar(sum(s.total_bytes for s in shards), "convert", progress)
    with save_model_dir(output) as tmp:
        writer = ShardedWriter(tmp, max_shard_size)
        try:
            for hf_name, make in plan:
                tensor = make()
                writer.add(hf_name, tensor.to(out_dtype))
                bar.update(tensor.numel() * tensor.element_size())
                del tensor
            writer.close()
        finally:
            writer.abort()
            bar.close()
        _write_config(tmp, params, dim, n_layers, n_heads, n_kv, head_dim, intermediate, vocab_size, out_dtype, max_position_embeddings)
        if tok_path is not None:
            _write_tokenizer(tmp, tok_path)
        write_manifest(tmp, produced_by="knowlm weights convert-meta", arguments={"input": str(src), "dtype": dtype},
                       base_model=str(src), meta_params=params, shards=n)
    for shard in shards:
        shard.close()
    return ConvertSummary(str(output), n, n_layers, len(plan), dim, intermediate, vocab_size, dtype_name(out_dtype),
                          time.perf_counter() - started)


def _write_config(out: Path, params, dim, n_layers, n_heads, n_kv, head_dim, intermediate, vocab, dtype, max_pos) -> None:
    from transformers import GenerationConfig, LlamaConfig

    theta = float(params.get("rope_theta", 10000.0))
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=dim,
        intermediate_size=intermediate,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        head_dim=head_dim,
        rms_norm_eps=float(params.get("norm_eps", 1e-5)),
        max_position_embeddings=int(max_pos or params.get("max_seq_len") or (4096 if theta == 10000.0 and n_kv != n_heads else 2048)),
        rope_parameters={"rope_type": "default", "rope_theta": theta},
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        architectures=["LlamaForCausalLM"],
    )
    config.dtype = dtype
    config.save_pretrained(str(out))
    GenerationConfig(bos_token_id=1, eos_token_id=2).save_pretrained(str(out))


def _write_tokenizer(out: Path, tokenizer_model: Path) -> None:
    """A HF tokenizer from Meta's SentencePiece file (kept beside it: GGUF export needs it)."""
    from transformers import LlamaTokenizer

    shutil.copy2(tokenizer_model, out / "tokenizer.model")
    tok = LlamaTokenizer.from_pretrained(str(out), add_bos_token=True, add_eos_token=False)
    tok.save_pretrained(str(out))
