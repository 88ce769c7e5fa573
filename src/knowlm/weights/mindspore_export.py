"""Export a Hugging Face LLaMA to a MindSpore ``.ckpt`` with MindFormers' parameter names.

A MindSpore checkpoint is a protobuf file (``mindspore/ccsrc/utils/checkpoint.proto``)::

    message Checkpoint { message Value { required string tag = 1; required TensorProto tensor = 2; }
                         repeated Value value = 1; }
    message TensorProto { repeated int64 dims = 1; required string tensor_type = 2; required bytes tensor_content = 3; }

so it can be written without MindSpore (an 800 MB wheel). A repeated top-level field is just its
entries one after another, and every length is known from the tensor's shape, so the wire
format is written directly, streaming each tensor's bytes in chunks. Tensors above 1 GiB are
split into several entries with the same tag, which ``mindspore.load_checkpoint`` concatenates.
Names follow the MindFormers LLaMA port's ``convert_weight.py`` (used for KnowLM-13B-ZhiXi on Ascend).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from knowlm.errors import KnowlmError
from knowlm.utils.atomic import atomic_write
from knowlm.weights.checkpoint_reader import Checkpoint
from knowlm.weights.tensor_io import DEFAULT_CHUNK_BYTES, chunk_ranges, dtype_from_name, progress_bar, read_config, tensor_bytes

MS_TYPES = {torch.float32: "Float32", torch.float16: "Float16", torch.bfloat16: "BFloat16", torch.float64: "Float64",
            torch.int64: "Int64", torch.int32: "Int32", torch.int8: "Int8", torch.uint8: "UInt8", torch.bool: "Bool"}
SLICE_BYTES = 1 << 30


def mindformers_name(name: str) -> str:
    """Hugging Face LLaMA parameter name -> MindFormers LLaMA name (as its convert_weight.py)."""
    name = name.replace("embed_tokens.weight", "tok_embeddings.embedding_weight")
    for hf, ms in ((".self_attn.q_proj.", ".attention.wq."), (".self_attn.k_proj.", ".attention.wk."),
                   (".self_attn.v_proj.", ".attention.wv."), (".self_attn.o_proj.", ".attention.wo."),
                   (".mlp.gate_proj.", ".feed_forward.w1."), (".mlp.down_proj.", ".feed_forward.w2."),
                   (".mlp.up_proj.", ".feed_forward.w3."), (".input_layernorm.", ".attention_norm."),
                   (".post_attention_layernorm.", ".ffn_norm."), (".norm.", ".norm_out.")):
        name = name.replace(hf, ms)
    return name


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # int64 negatives as two's complement, as protobuf does
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _entry_prefix(tag: str, dims: tuple[int, ...], tensor_type: str, content_len: int) -> bytes:
    """Everything of one ``Value`` up to (not including) the tensor bytes."""
    tensor = bytearray()
    for d in dims or (0,):  # MindSpore writes a scalar as dims [0]
        tensor += _field(1, 0) + _varint(d)
    type_bytes = tensor_type.encode()
    tensor += _field(2, 2) + _varint(len(type_bytes)) + type_bytes
    tensor += _field(3, 2) + _varint(content_len)
    tensor_len = len(tensor) + content_len
    tag_bytes = tag.encode()
    value = _field(1, 2) + _varint(len(tag_bytes)) + tag_bytes + _field(2, 2) + _varint(tensor_len) + bytes(tensor)
    value_len = len(value) + content_len
    return _field(1, 2) + _varint(value_len) + value


@dataclass
class MindSporeSummary:
    output: str
    tensors: int
    bytes: int
    names: dict[str, str]
    seconds: float


def export_mindspore(model: str | os.PathLike, output: str | os.PathLike, dtype: str | None = None,
                     progress: bool = False) -> MindSporeSummary:
    """Write ``model`` (HF LLaMA directory) as a MindSpore checkpoint ``output`` (must end in .ckpt)."""
    started = time.perf_counter()
    model, output = Path(model), Path(output)
    if output.suffix != ".ckpt":
        raise KnowlmError(f"MindSpore checkpoints must end in .ckpt (mindspore.load_checkpoint refuses others): {output}")
    config = read_config(model)
    if config.get("model_type") != "llama":
        raise KnowlmError(f"MindSpore export supports LLaMA-architecture models; {model} is {config.get('model_type')!r}")
    out_dtype = dtype_from_name(dtype)
    ckpt = Checkpoint(model)
    names: dict[str, str] = {}
    bar = progress_bar(ckpt.total_bytes, "mindspore", progress)
    try:
        with atomic_write(output, "wb") as handle:
            for name in ckpt.names():
                if name.endswith("rotary_emb.inv_freq"):
                    continue
                info = ckpt.info(name)
                dt = out_dtype if (out_dtype is not None and info.dtype.is_floating_point) else info.dtype
                if dt not in MS_TYPES:
                    raise KnowlmError(f"tensor {name}: dtype {dt} has no MindSpore equivalent")
                tag = mindformers_name(name)
                names[name] = tag
                # group row chunks into entries of at most SLICE_BYTES (one entry for all but huge tensors)
                per_elem = dt.itemsize
                pieces: list[list[tuple[int, int]]] = [[]]
                size = 0
                for start, stop in chunk_ranges(info, min(SLICE_BYTES, DEFAULT_CHUNK_BYTES)):
                    if pieces[-1] and size + (stop - start) * per_elem > SLICE_BYTES:
                        pieces.append([])
                        size = 0
                    pieces[-1].append((start, stop))
                    size += (stop - start) * per_elem
                for piece in pieces:
                    content = sum(stop - start for start, stop in piece) * per_elem
                    handle.write(_entry_prefix(tag, info.shape, MS_TYPES[dt], content))
                    for start, stop in piece:
                        handle.write(tensor_bytes(ckpt.read(name, start, stop).to(dt)))
                bar.update(info.nbytes)
    finally:
        bar.close()
        ckpt.close()
    return MindSporeSummary(str(output), len(names), output.stat().st_size, names, time.perf_counter() - started)
