"""A PEFT LoRA adapter as a GGUF adapter for llama.cpp's ``--lora``, as ``convert_lora_to_gguf.py`` writes it.

Each adapted weight ``W`` becomes ``<gguf name>.lora_a`` (A, ``r x in``) and ``.lora_b`` (B,
``out x r``); llama.cpp adds ``alpha / r * B @ A``, with ``r`` read per tensor from A and one
``adapter.lora.alpha`` for the file. For LLaMA's q/k projections the rows of B are permuted like
the base weight's; the embedding's A is stored transposed, as llama.cpp reads it. Where PEFT's
scaling is not ``alpha / r`` (rsLoRA's ``alpha / sqrt(r)``, a per-module ``alpha_pattern``) the
difference is folded into B, so the adapter means in llama.cpp what it meant in PEFT.

llama.cpp adapters hold A/B pairs only: an adapter that also replaces whole tensors
(``modules_to_save``, trainable tokens, a resized vocabulary) is refused with the way out --
merge it (``knowlm weights merge-lora``) and export the merged model.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from knowlm.errors import KnowlmError
from knowlm.utils.atomic import atomic_path
from knowlm.weights.gguf_export import model_arch, permute_for_gguf
from knowlm.weights.lora import read_adapter
from knowlm.weights.checkpoint_reader import Checkpoint
from knowlm.weights.tensor_io import read_config

ADAPTER_TYPES = ("f32", "f16", "bf16", "q8_0")


@dataclass
class LoraGGUFSummary:
    output: str
    type: str
    pairs: int
    alpha: float
    folded: int  # modules whose PEFT scaling was folded into B
    bytes: int
    seconds: float


def _base_dir(adapter: Path, base: str | os.PathLike | None, lparams: dict) -> Path:
    candidate = Path(base) if base else Path(lparams.get("base_model_name_or_path") or "")
    if not (candidate / "config.json").is_file():
        raise KnowlmError(f"the adapter's base model config is needed for its architecture: pass --base DIR "
                          f"(adapter_config.json names {lparams.get('base_model_name_or_path')!r}, not a local model directory)")
    return candidate


def export_lora_gguf(adapter: str | os.PathLike, output: str | os.PathLike, base: str | os.PathLike | None = None,
                     type: str = "f16", name: str | None = None) -> LoraGGUFSummary:
    """Write the LoRA ``adapter`` as a GGUF adapter at ``output`` (``base``: the model it was trained on)."""
    import gguf
    from gguf import GGMLQuantizationType as Q

    started = time.perf_counter()
    type = type.lower()
    if type not in ADAPTER_TYPES:
        raise KnowlmError(f"GGUF adapters are written as {', '.join(ADAPTER_TYPES)} (llama.cpp's converter offers these); not {type!r}")
    adapter, output = Path(adapter), Path(output)
    lparams = json.loads((adapter / "adapter_config.json").read_text()) if (adapter / "adapter_config.json").is_file() else {}
    config_, lora, modules, replacements, token_rows = read_adapter(adapter)
    base_dir = _base_dir(adapter, base, lparams)
    config = read_config(base_dir)
    arch = model_arch(config, "GGUF adapter export")
    with Checkpoint(base_dir) as base_ckpt:
        shapes = {n: i.shape for n, i in base_ckpt.infos.items()}
    whole = [n for n, key in replacements.items() if ".base_layer." not in key or lora.info(key).shape != shapes.get(n)]
    if whole or token_rows:
        raise KnowlmError(f"the adapter replaces whole tensors ({(whole + list(token_rows))[0]}: modules_to_save, trainable "
                          "tokens or a resized vocabulary), which a llama.cpp LoRA cannot carry: merge it with "
                          "`knowlm weights merge-lora` and export the merged model")
    for weight_name in modules:
        if weight_name not in shapes:
            raise KnowlmError(f"adapter module {modules[weight_name].module} has no tensor {weight_name} in the base {base_dir}")
    alpha = float(lparams.get("lora_alpha", 8))
    tmap = gguf.get_tensor_name_map(next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch.gguf_name),
                                    int(config["num_hidden_layers"]))
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    wanted = getattr(Q, type.upper())

    # llama.cpp's order: adapter keys sorted (as safetensors lists them), each module at its first key
    order = list(dict.fromkeys(_base_name(k) for k in (sorted(lora.names()) if lora.files[0].suffix == ".safetensors" else lora.names())
                               if _base_name(k) in modules))
    pairs, folded = [], 0
    for weight_name in order:
        entry = modules[weight_name]
        gguf_name = tmap.get_name(weight_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise KnowlmError(f"adapter module {entry.module} has no GGUF equivalent in llama.cpp's {arch.gguf_name}")
        A, B = lora.tensor(entry.A), lora.tensor(entry.B)
        if not (A.dtype.is_floating_point and B.dtype.is_floating_point):
            raise KnowlmError(f"{entry.module}: lora_A/lora_B are not floating point")
        llama_scale = alpha / entry.rank
        if not math.isclose(entry.scaling, llama_scale, rel_tol=1e-9):
            B = (B.double() * (entry.scaling / llama_scale)).to(B.dtype)
            folded += 1
        if arch.permute_qk and weight_name.endswith("q_proj.weight"):
            B = permute_for_gguf(B, n_head)
        elif arch.permute_qk and weight_name.endswith("k_proj.weight"):
            B = permute_for_gguf(B, n_kv)
        if "token_embd.weight" in gguf_name:
            A = A.T
        pairs.append((gguf_name, A, B))

    try:
        with atomic_path(output) as tmp:
            writer = gguf.GGUFWriter(str(tmp), arch.gguf_name)
            try:
                for gguf_name, A, B in pairs:
                    for suffix, t in ((".lora_a", A), (".lora_b", B)):
                        data = t if t.dtype in (torch.float16, torch.float32) else t.float()  # as llama.cpp
                        data = np.ascontiguousarray(data.contiguous().numpy())
                        qtype = Q.F32 if data.ndim <= 1 else wanted
                        try:
                            out = gguf.quants.quantize(data, qtype)
                        except gguf.QuantError:
                            qtype, out = Q.F16, gguf.quants.quantize(data, Q.F16)
                        writer.add_tensor(gguf_name + suffix, out, raw_dtype=qtype)
                _add_adapter_metadata(writer, adapter, base_dir, name, alpha)
                writer.write_header_to_file()
                writer.write_kv_data_to_file()
                writer.write_tensors_to_file()
            finally:
                writer.close()
    finally:
        lora.close()
    return LoraGGUFSummary(str(output), type, len(pairs), alpha, folded, output.stat().st_size, time.perf_counter() - started)


def _add_adapter_metadata(writer, adapter: Path, base_dir: Path, name: str | None, alpha: float) -> None:
    """convert_lora_to_gguf's KVs: general.* (model card of the adapter, name of the base dir), adapter type and alpha."""
    import gguf

    total, *_ = writer.get_total_parameter_count()
    metadata = gguf.Metadata.load(None, adapter, name, total)
    if metadata.name is None:
        metadata.name = base_dir.name
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    metadata.set_gguf_meta_model(writer)
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _base_name(key: str) -> str:
    """convert_lora_to_gguf's ``get_base_tensor_name``: the adapted base weight of an adapter key."""
    name = key.replace("base_model.model.", "")
    for part in (".lora_A.weight", ".lora_B.weight", ".lora_embedding_A", ".lora_embedding_B"):
        name = name.replace(part, ".weight")
    return name

