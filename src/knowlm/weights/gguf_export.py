"""Export a LLaMA-architecture Hugging Face model to GGUF (llama.cpp), streaming.

The ``gguf`` package writes the container but has no Hugging Face converter, so the mapping is
here: llama.cpp's tensor names, its q/k row order (the inverse of Hugging Face's rotary
permutation), the model hyperparameters and the SentencePiece vocabulary (pieces, scores and
token types, which both llama.cpp and transformers' GGUF loader rebuild the tokenizer from).
All tensor headers are written first from shapes alone; then tensors are converted and written
one at a time, so memory holds one tensor.

Types: ``f32``; ``f16`` (vectors stay f32, as llama.cpp does); ``q8_0`` (matrices whose rows are
a multiple of 32 are quantised, others fall back to f16).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from knowlm.errors import KnowlmError
from knowlm.weights.tensor_io import Checkpoint, progress_bar, read_config

TYPES = ("f32", "f16", "q8_0")


def hf_to_gguf_name(name: str) -> str | None:
    """``model.layers.3.self_attn.q_proj.weight`` -> ``blk.3.attn_q.weight`` (None: not exported)."""
    fixed = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if name in fixed:
        return fixed[name]
    parts = name.split(".")
    if len(parts) >= 5 and parts[0] == "model" and parts[1] == "layers":
        layer, rest = parts[2], ".".join(parts[3:])
        per_layer = {
            "self_attn.q_proj.weight": "attn_q.weight",
            "self_attn.k_proj.weight": "attn_k.weight",
            "self_attn.v_proj.weight": "attn_v.weight",
            "self_attn.o_proj.weight": "attn_output.weight",
            "mlp.gate_proj.weight": "ffn_gate.weight",
            "mlp.up_proj.weight": "ffn_up.weight",
            "mlp.down_proj.weight": "ffn_down.weight",
            "input_layernorm.weight": "attn_norm.weight",
            "post_attention_layernorm.weight": "ffn_norm.weight",
        }
        if rest in per_layer:
            return f"blk.{layer}.{per_layer[rest]}"
        if rest.endswith("rotary_emb.inv_freq"):
            return None
    raise KnowlmError(f"tensor {name} has no GGUF equivalent: is this a plain LLaMA model?")


def permute_for_gguf(w: np.ndarray, n_head: int) -> np.ndarray:
    """Hugging Face rotary row order -> llama.cpp's (as llama.cpp's convert_hf_to_gguf.py does)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def sentencepiece_vocab(model_dir: Path, vocab_size: int) -> tuple[list[str], list[float], list[int]]:
    """Pieces, scores and llama.cpp token types from ``tokenizer.model`` (+ added tokens), padded to ``vocab_size``."""
    import sentencepiece as spm
    from gguf import TokenType

    path = model_dir / "tokenizer.model"
    if not path.is_file():
        raise KnowlmError(f"{model_dir} has no tokenizer.model (SentencePiece); GGUF export needs it for the vocabulary")
    sp = spm.SentencePieceProcessor(model_file=str(path))
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        if sp.is_unknown(i):
            types.append(TokenType.UNKNOWN)
        elif sp.is_control(i):
            types.append(TokenType.CONTROL)
        elif sp.is_unused(i):
            types.append(TokenType.UNUSED)
        elif sp.is_byte(i):
            types.append(TokenType.BYTE)
        else:
            types.append(TokenType.NORMAL)
    added = model_dir / "added_tokens.json"
    if added.is_file():
        for piece, idx in sorted(json.loads(added.read_text()).items(), key=lambda kv: kv[1]):
            if idx == len(tokens):
                tokens.append(piece)
                scores.append(-1000.0)
                types.append(TokenType.USER_DEFINED)
    if len(tokens) > vocab_size:
        raise KnowlmError(f"tokenizer has {len(tokens)} tokens but the model's vocab_size is {vocab_size}")
    while len(tokens) < vocab_size:
        tokens.append(f"[PAD{len(tokens)}]")
        scores.append(-1000.0)
        types.append(TokenType.UNUSED)
    return tokens, scores, [int(t) for t in types]


@dataclass
class GGUFSummary:
    output: str
    type: str
    tensors: int
    bytes: int
    quantized: int
    fallback_f16: int
    seconds: float


def export_gguf(model: str | os.PathLike, output: str | os.PathLike, type: str = "f16", name: str | None = None,
                progress: bool = False) -> GGUFSummary:
    """Write ``model`` (HF LLaMA directory) as a single GGUF file at ``output``."""
    import gguf
    from gguf import GGMLQuantizationType as Q
    from gguf import LlamaFileType, TokenType

    started = time.perf_counter()
    if type not in TYPES:
        raise KnowlmError(f"unknown GGUF type {type!r}; choose one of: {', '.join(TYPES)}")
    model, output = Path(model), Path(output)
    config = read_config(model)
    if config.get("model_type") != "llama":
        raise KnowlmError(f"GGUF export supports LLaMA-architecture models; {model} is {config.get('model_type')!r}")
    if config.get("quantization_config"):
        raise KnowlmError(f"{model} is already quantised; export from the full-precision model")
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // n_head)
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", "default") not in ("default", None):
        raise KnowlmError(f"rope scaling {rope.get('rope_type')!r} is not supported by this exporter")
    theta = float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0)
    tokens, scores, token_types = sentencepiece_vocab(model, int(config["vocab_size"]))

    ckpt = Checkpoint(model)
    plan = []  # (hf name, gguf name, shape, quant type)
    for hf_name in ckpt.names():
        gguf_name = hf_to_gguf_name(hf_name)
        if gguf_name is None:
            continue
        info = ckpt.info(hf_name)
        if len(info.shape) == 1 or type == "f32":
            qtype = Q.F32
        elif type == "q8_0" and info.shape[-1] % 32 == 0:
            qtype = Q.Q8_0
        else:
            qtype = Q.F16
        plan.append((hf_name, gguf_name, info.shape, qtype))
    if "lm_head.weight" not in ckpt and not config.get("tie_word_embeddings"):
        raise KnowlmError(f"{model} has no lm_head.weight")

    file_type = {"f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16, "q8_0": LlamaFileType.MOSTLY_Q8_0}[type]
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".tmp-{output.name}.{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    try:
        writer.add_name(name or model.name)
        writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
        writer.add_embedding_length(hidden)
        writer.add_block_count(int(config["num_hidden_layers"]))
        writer.add_feed_forward_length(int(config["intermediate_size"]))
        writer.add_rope_dimension_count(head_dim)
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_kv)
        writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
        writer.add_rope_freq_base(theta)
        writer.add_vocab_size(int(config["vocab_size"]))
        writer.add_file_type(int(file_type))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(token_types)
        for key, add in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id),
                         ("pad_token_id", writer.add_pad_token_id)):
            value = config.get(key)
            if isinstance(value, list):
                value = value[0] if value else None
            if value is not None:
                add(int(value))
        if TokenType.UNKNOWN in token_types:
            writer.add_unk_token_id(token_types.index(TokenType.UNKNOWN))
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        quantized = fallback = 0
        for _, gguf_name, shape, qtype in plan:
            if qtype == Q.Q8_0:
                nbytes = int(np.prod(shape[:-1])) * (shape[-1] // 32) * 34
                writer.add_tensor_info(gguf_name, shape, np.dtype(np.float32), nbytes, raw_dtype=Q.Q8_0)
                quantized += 1
            else:
                np_dtype = np.float32 if qtype == Q.F32 else np.float16
                writer.add_tensor_info(gguf_name, shape, np.dtype(np_dtype), int(np.prod(shape)) * np.dtype(np_dtype).itemsize)
                fallback += type == "q8_0" and qtype == Q.F16
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        bar = progress_bar(sum(ckpt.info(p[0]).nbytes for p in plan), "gguf", progress)
        for hf_name, gguf_name, _, qtype in plan:
            data = ckpt.tensor(hf_name).float().numpy()
            if gguf_name.endswith("attn_q.weight"):
                data = permute_for_gguf(data, n_head)
            elif gguf_name.endswith("attn_k.weight"):
                data = permute_for_gguf(data, n_kv)
            if qtype == Q.Q8_0:
                data = gguf.quants.quantize(data, Q.Q8_0)
            else:
                data = data.astype(np.float32 if qtype == Q.F32 else np.float16)
            writer.write_tensor_data(np.ascontiguousarray(data))
            bar.update(ckpt.info(hf_name).nbytes)
        bar.close()
        writer.close()
        os.replace(tmp, output)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        ckpt.close()
    return GGUFSummary(str(output), type, len(plan), output.stat().st_size, quantized, fallback, time.perf_counter() - started)
