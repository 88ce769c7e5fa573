"""Export a LLaMA-family Hugging Face model (LLaMA 1/2/3, Mistral, Qwen2) to GGUF for llama.cpp, streaming.

The file is the one llama.cpp's ``convert_hf_to_gguf.py`` writes, key for key and tensor for
tensor: the same tensor names (gguf-py's name map) and order (shards by name, safetensors names
sorted), the same q/k row permutation for LLaMA, the same type rules (vectors, norms and biases
stay F32; a matrix whose rows do not split into quant blocks falls back to F16), the same
metadata (``general.*`` from gguf-py's ``Metadata`` -- name, size label, model card --, the
hyperparameters, rope scaling, then the vocabulary and ``SpecialVocab``: merges, special ids,
chat template). See :mod:`.gguf_vocab` for the tokenizer.

Types written here (no llama.cpp needed): ``f32``, ``f16``, ``bf16``, ``q8_0`` (what the
converter offers) and ``q4_0``, ``q4_1``, ``q5_0``, ``q5_1`` (gguf-py's ports of ggml's reference
quantizers; every matrix gets the type, as ``llama-quantize --pure``). K-quants and IQ types
(``q4_k_m``, ``q5_k_m``, ``q6_k``, ``iq4_xs``...) go through llama.cpp's own quantizer
(:mod:`.gguf_quantize`), as the documented workflow does: ``--outtype auto``, then ``llama-quantize``.

Memory: all tensor headers are written first from shapes alone; then each tensor is read,
converted and written in row chunks (whole heads for the permuted q/k), so memory holds a chunk.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from knowlm.errors import KnowlmError
from knowlm.utils.atomic import atomic_path
from knowlm.weights.gguf_vocab import read_vocab, write_vocab
from knowlm.weights.checkpoint_reader import Checkpoint
from knowlm.weights.tensor_io import DEFAULT_CHUNK_BYTES, progress_bar, read_config

DIRECT_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1")
SKIPPED_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")  # as llama.cpp


@dataclass(frozen=True)
class Arch:
    gguf_name: str  # gguf.MODEL_ARCH_NAMES value
    permute_qk: bool  # LLaMA: undo Hugging Face's rotary row order
    llama_params: bool  # llama.cpp's LlamaModel adds vocab_size and rope.dimension_count


ARCHS = {
    "LlamaForCausalLM": Arch("llama", True, True),
    "MistralForCausalLM": Arch("llama", True, True),
    "Qwen2ForCausalLM": Arch("qwen2", False, False),
}
MODEL_TYPES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def model_arch(config: dict, what: str = "GGUF export") -> Arch:
    name = (config.get("architectures") or [MODEL_TYPES.get(config.get("model_type"), "")])[0]
    if name not in ARCHS:
        raise KnowlmError(f"{what} supports LLaMA-architecture models (LLaMA 1/2/3, Mistral, Qwen2); this is "
                          f"{name or config.get('model_type')!r}")
    return ARCHS[name]


def rope_parameters(config: dict) -> dict:
    """Rope settings as llama.cpp's converter reads them (``rope_parameters`` or ``rope_scaling``, plus ``rope_theta``)."""
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    if "rope_theta" not in rope and config.get("rope_theta") is not None:
        rope["rope_theta"] = config["rope_theta"]
    if "rope_type" not in rope and rope.get("type") is not None:
        rope["rope_type"] = rope["type"]
    return rope


def head_dim(config: dict) -> int:
    return int(config.get("head_dim") or int(config["hidden_size"]) // int(config["num_attention_heads"]))


def llama3_rope_factors(config: dict) -> np.ndarray:
    """The ``rope_freqs.weight`` tensor llama.cpp derives for ``rope_type: llama3`` (per-frequency divisors)."""
    rope = rope_parameters(config)
    dim = head_dim(config)
    freqs = 1.0 / (rope.get("rope_theta", 10000.0) ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, low, high = rope.get("factor", 8.0), rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_len = rope.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_len / low, old_len / high
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_len / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(out, dtype=torch.float32).numpy()


def permute_for_gguf(w, n_head: int):
    """Hugging Face rotary row order -> llama.cpp's (``LlamaModel.permute``); works on whole heads of rows."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def ordered_names(ckpt: Checkpoint) -> list[str]:
    """llama.cpp's tensor order: weight files by name; names sorted within a safetensors file, as stored in a .bin."""
    out = []
    for file in sorted(ckpt.files, key=lambda f: f.name):
        names = [n for n, info in ckpt.infos.items() if info.file == file]
        out += sorted(names) if file.suffix == ".safetensors" else names
    return out


@dataclass
class PlannedTensor:
    hf_name: str | None  # None: generated (rope_freqs)
    gguf_name: str
    shape: tuple[int, ...]
    qtype: object  # gguf.GGMLQuantizationType
    permute_heads: int = 0  # > 0: permute rows for this many heads (q/k of LLaMA)
    data: np.ndarray | None = None  # generated tensors

    @property
    def nbytes(self) -> int:
        import gguf

        block, size = gguf.GGML_QUANT_SIZES[self.qtype]
        return math.prod(self.shape[:-1]) * (self.shape[-1] // block) * size


def plan_tensors(ckpt: Checkpoint, config: dict, arch: Arch, type: str) -> list[PlannedTensor]:
    import gguf
    from gguf import GGMLQuantizationType as Q

    wanted = getattr(Q, type.upper())
    tmap = gguf.get_tensor_name_map(next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch.gguf_name),
                                    int(config["num_hidden_layers"]))
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    plan = []
    if rope_parameters(config).get("rope_type", "").lower() == "llama3":
        factors = llama3_rope_factors(config)
        plan.append(PlannedTensor(None, "rope_freqs.weight", factors.shape, Q.F32, data=factors))
    for name in ordered_names(ckpt):
        if name.endswith(SKIPPED_SUFFIXES):
            continue
        new_name = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise KnowlmError(f"tensor {name} has no GGUF equivalent in llama.cpp's {arch.gguf_name} architecture")
        shape = ckpt.info(name).shape
        heads = 0
        if arch.permute_qk and name.endswith(("q_proj.weight", "q_proj.bias")):
            heads = n_head
        elif arch.permute_qk and name.endswith(("k_proj.weight", "k_proj.bias")):
            heads = n_kv
        if len(shape) <= 1 or new_name.endswith("_norm.weight") or not new_name.endswith(".weight"):
            qtype = Q.F32
        else:
            qtype = wanted
            if shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
                qtype = Q.F16  # llama.cpp's fallback when rows do not split into blocks
        plan.append(PlannedTensor(name, new_name, shape, qtype, heads))
    return plan


def _row_chunks(shape, itemsize: int, align_rows: int, chunk_bytes: int):
    """Flat ``[start, stop)`` ranges of whole rows, each a multiple of ``align_rows`` rows."""
    row = math.prod(shape[1:]) if len(shape) > 1 else 1
    rows = shape[0] if shape else 1
    per = max(align_rows, (chunk_bytes // max(1, row * itemsize)) // align_rows * align_rows)
    for r0 in range(0, rows, per):
        yield r0 * row, min(rows, r0 + per) * row


def _converted_chunks(ckpt: Checkpoint, t: PlannedTensor, chunk_bytes: int):
    """The tensor's GGUF bytes, chunk by chunk: llama.cpp's arithmetic (non-f16/f32 -> f32, permute, quantize)."""
    import gguf

    if t.data is not None:
        yield gguf.quants.quantize(t.data, t.qtype)
        return
    info = ckpt.info(t.hf_name)
    head_rows = info.shape[0] // t.permute_heads if t.permute_heads else 1
    for start, stop in _row_chunks(info.shape, info.dtype.itemsize, head_rows, chunk_bytes):
        x = ckpt.read(t.hf_name, start, stop)
        if x.dtype not in (torch.float16, torch.float32):
            x = x.float()
        x = x.reshape(-1, *info.shape[1:]) if len(info.shape) > 1 else x
        if t.permute_heads:
            x = permute_for_gguf(x, x.shape[0] // head_rows)
        yield gguf.quants.quantize(x.numpy(), t.qtype)


def _write_streamed(writer, chunks, nbytes: int) -> None:
    """``GGUFWriter.write_tensor_data`` for a tensor that arrives in chunks (same padding and bookkeeping)."""
    from gguf.gguf_writer import WriterState

    fout = writer.fout[0]
    name = next(iter(writer.tensors[0]))
    info = writer.tensors[0].pop(name)
    assert info.nbytes == nbytes, name
    writer.write_padding(fout, fout.tell())
    written = 0
    for chunk in chunks:
        data = np.ascontiguousarray(chunk)
        fout.write(memoryview(data).cast("B"))
        written += data.nbytes
    if written != nbytes:
        raise KnowlmError(f"GGUF tensor {name}: wrote {written} bytes, expected {nbytes}")
    writer.write_padding(fout, nbytes)
    writer.state = WriterState.WEIGHTS


def add_hparams(writer, config: dict, arch: Arch, file_type: int) -> None:
    """``TextModel.set_gguf_parameters`` (+ ``LlamaModel``'s) for the keys a LLaMA-family config has, in that order."""
    import gguf

    writer.add_block_count(int(config["num_hidden_layers"]))
    if config.get("max_position_embeddings") is not None:
        writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    if config.get("num_key_value_heads") is not None:
        writer.add_head_count_kv(int(config["num_key_value_heads"]))
    rope = rope_parameters(config)
    rope_type, factor = rope.get("rope_type"), rope.get("factor")
    if rope_type == "linear" and factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(factor)
    elif rope_type == "yarn" and factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(factor)
        writer.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
        for key, add in (("extrapolation_factor", writer.add_rope_scaling_yarn_ext_factor),
                         ("attention_factor", writer.add_rope_scaling_yarn_attn_factor),
                         ("beta_fast", writer.add_rope_scaling_yarn_beta_fast),
                         ("beta_slow", writer.add_rope_scaling_yarn_beta_slow)):
            if rope.get(key) is not None:
                add(rope[key])
    elif rope_type in ("dynamic", "longrope", "su"):
        raise KnowlmError(f"rope scaling {rope_type!r} has no llama.cpp equivalent for {arch.gguf_name}; "
                          "supported: linear, yarn, llama3")
    if rope.get("rope_theta") is not None:
        writer.add_rope_freq_base(rope["rope_theta"])
    if config.get("rms_norm_eps") is not None:
        writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    if config.get("head_dim") is not None:
        writer.add_key_length(config["head_dim"])
        writer.add_value_length(config["head_dim"])
    writer.add_file_type(file_type)
    if arch.llama_params:
        writer.add_vocab_size(int(config["vocab_size"]))
        writer.add_rope_dimension_count(head_dim(config))


def add_general(writer, model_dir: Path, name: str | None, gguf_type: str) -> None:
    """``general.*`` as the converter sets them: gguf-py's Metadata (model card, names), size label, type."""
    import gguf

    total, shared, expert, expert_count = writer.get_total_parameter_count()
    metadata = gguf.Metadata.load(None, model_dir, name, total)
    if metadata.name is None:
        metadata.name = model_dir.name
    if metadata.size_label is None and total > 0:
        metadata.size_label = gguf.size_label(total, shared, expert, expert_count)
    writer.add_type(gguf_type)
    metadata.set_gguf_meta_model(writer)


@dataclass
class GGUFSummary:
    output: str
    type: str
    tensors: int
    bytes: int
    quantized: int
    fallback_f16: int
    seconds: float
    tokenizer: str = ""
    mix: dict[str, int] = field(default_factory=dict)  # llama.cpp types: matrices per ggml type


def export_gguf(model: str | os.PathLike, output: str | os.PathLike, type: str = "f16", name: str | None = None,
                progress: bool = False, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                imatrix: str | os.PathLike | None = None) -> GGUFSummary:
    """Write ``model`` (a Hugging Face LLaMA-family directory) as one GGUF file at ``output``.

    ``type``: one of :data:`DIRECT_TYPES`, or a llama.cpp type (``q4_k_m``...; needs llama-cpp-python),
    optionally guided by an importance matrix ``imatrix``.
    """
    from knowlm.weights.gguf_quantize import LLAMA_CPP_TYPES, quantize_gguf

    type = type.lower()
    if type in LLAMA_CPP_TYPES:
        return quantize_gguf(model, output, type, name=name, progress=progress, chunk_bytes=chunk_bytes, imatrix=imatrix)
    if type not in DIRECT_TYPES:
        raise KnowlmError(f"unknown GGUF type {type!r}; choose one of: {', '.join(DIRECT_TYPES + LLAMA_CPP_TYPES)}")
    if imatrix is not None:
        raise KnowlmError(f"--imatrix applies to llama.cpp's K-quant/IQ types, not to {type}")
    return write_gguf(model, output, type, name=name, progress=progress, chunk_bytes=chunk_bytes)


def write_gguf(model, output, type: str, name: str | None = None, progress: bool = False,
               chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> GGUFSummary:
    import gguf
    from gguf import GGMLQuantizationType as Q

    started = time.perf_counter()
    model, output = Path(model), Path(output)
    config = read_config(model)
    arch = model_arch(config)
    if config.get("quantization_config"):
        raise KnowlmError(f"{model} is already quantised; export from the full-precision model")
    vocab = read_vocab(model, int(config["vocab_size"]))
    ckpt = Checkpoint(model)
    try:
        with atomic_path(output) as tmp:
            plan = _write_file(tmp, ckpt, model, config, arch, vocab, type, name, progress, chunk_bytes)
    finally:
        ckpt.close()
    wanted = getattr(Q, type.upper())
    matrices = [t for t in plan if len(t.shape) > 1 and t.gguf_name.endswith(".weight") and not t.gguf_name.endswith("_norm.weight")]
    return GGUFSummary(str(output), type, len(plan), output.stat().st_size,
                       sum(t.qtype == wanted for t in matrices) if type not in ("f32", "f16") else 0,
                       sum(t.qtype == Q.F16 and wanted != Q.F16 for t in matrices), time.perf_counter() - started, vocab.source)


def _write_file(tmp: Path, ckpt: Checkpoint, model: Path, config: dict, arch: Arch, vocab, type: str, name, progress,
                chunk_bytes) -> list[PlannedTensor]:
    import gguf

    writer = gguf.GGUFWriter(str(tmp), arch.gguf_name)
    try:
        plan = plan_tensors(ckpt, config, arch, type)
        for t in plan:
            writer.add_tensor_info(t.gguf_name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype)
        file_type = getattr(gguf.LlamaFileType, "ALL_F32" if type == "f32" else f"MOSTLY_{type.upper()}")
        add_general(writer, model, name, "model")
        add_hparams(writer, config, arch, int(file_type))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        tok_config = model / "tokenizer_config.json"
        if arch.gguf_name == "llama" and tok_config.is_file():
            import json

            if (prefix := json.loads(tok_config.read_text(encoding="utf-8")).get("add_prefix_space")) is not None:
                writer.add_add_space_prefix(prefix)
        write_vocab(writer, model, vocab)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        bar = progress_bar(sum(t.nbytes for t in plan), "gguf", progress)
        for t in plan:
            _write_streamed(writer, _converted_chunks(ckpt, t, chunk_bytes), t.nbytes)
            bar.update(t.nbytes)
        bar.close()
    finally:
        writer.close()
    return plan
