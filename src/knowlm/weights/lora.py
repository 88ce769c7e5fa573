"""Merge a PEFT LoRA adapter into its base model, tensor by tensor.

``W' = W + scaling * B @ A`` (transposed for ``fan_in_fan_out`` layers and embeddings), with
``scaling = alpha / r`` or ``alpha / sqrt(r)`` for rsLoRA, per-module ``rank_pattern`` /
``alpha_pattern`` honoured.

What PEFT saves besides A/B, and how it is merged (as ``merge_and_unload`` does):

- ``X.base_layer.weight``: the base weight of an adapted embedding / LM head (PEFT saves it when
  ``embed_tokens`` or ``lm_head`` are targeted, and after a vocabulary resize); it replaces the
  base checkpoint's tensor, and the LoRA update is added on top. A resized vocabulary updates
  ``vocab_size`` in the output's config.
- ``modules_to_save`` (saved as ``base_model.model.X.weight``): replaces the base tensor.
- ``trainable_token_indices`` (``X.token_adapter.trainable_tokens_delta``): the listed rows are
  replaced. Only the base tensor being merged (in row chunks) and the small
A/B matrices are in memory. The merge proves itself: every adapter module must map to a base
tensor, and every targeted tensor must actually change -- an adapter whose names do not match
the base, or whose update vanishes when rounded to the base dtype, is an error, not a silent
no-op.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from knowlm.errors import KnowlmError
from knowlm.models.manifest import write_manifest
from knowlm.models.templates import manifest_template
from knowlm.utils.outputs import save_model_dir
from knowlm.weights.checkpoint_reader import Checkpoint
from knowlm.weights.checkpoint_writer import ShardedWriter, copy_side_files
from knowlm.weights.tensor_io import DEFAULT_CHUNK_BYTES, chunk_ranges, progress_bar, read_config

_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<kind>A|B|embedding_A|embedding_B)(?:\.(?P<adapter>(?!weight$|bias$)[^.]+))?(?:\.(?P<param>weight|bias))?$")
_TOKEN_DELTA = ".token_adapter.trainable_tokens_delta"
_RESIZABLE = ("embed_tokens.weight", "lm_head.weight", "wte.weight", "embed_out.weight")  # vocabulary-sized tensors
_QUANT_MARKERS = (".SCB", ".qweight", ".qzeros", ".scales", ".absmax", ".quant_map", ".quant_state", ".weight_format")
_TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja")


@dataclass
class LoraModule:
    """One adapted layer: its base weight name and the pieces of its update."""

    module: str
    A: str | None = None
    B: str | None = None
    B_bias: str | None = None
    embedding: bool = False
    scaling: float = 0.0
    rank: int = 0


@dataclass
class MergeSummary:
    output: str
    merged: int = 0
    replaced: int = 0
    copied: int = 0
    largest_change: float = 0.0
    largest_change_tensor: str = ""
    changes: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def _adapter_weights(adapter: Path) -> Checkpoint:
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if (adapter / name).is_file():
            return Checkpoint(adapter, files=[adapter / name])
    raise KnowlmError(f"{adapter} has no adapter_model.safetensors or adapter_model.bin")


def _pattern_value(patterns: dict, module: str, default):
    """PEFT's rule: a key matches when the module path ends with it (as a regex, on a dot boundary)."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _strip_prefix(key: str) -> str:
    for prefix in ("base_model.model.", "base_model."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def _token_indices(config: dict, module: str) -> list[int]:
    """The ``trainable_token_indices`` PEFT applied to ``module`` (a list means: the input embedding)."""
    spec = config.get("trainable_token_indices")
    if isinstance(spec, dict):
        for key, indices in spec.items():
            if re.match(rf"(.*\.)?({key})$", module):
                return list(indices)
        raise KnowlmError(f"trainable tokens of {module} have no entry in trainable_token_indices {list(spec)}")
    if isinstance(spec, list):
        return list(spec)
    raise KnowlmError(f"the adapter trains tokens of {module} but its config has no trainable_token_indices")


def read_adapter(adapter: str | os.PathLike) -> tuple[dict, Checkpoint, dict[str, LoraModule], dict[str, str], dict[str, tuple[str, list[int]]]]:
    """(config, weights, LoRA modules by base weight name, full replacements {base name: adapter key},
    trained token rows {base name: (adapter key, row indices)})."""
    adapter = Path(adapter)
    config_path = adapter / "adapter_config.json"
    if not config_path.is_file():
        raise KnowlmError(f"{adapter} is not a PEFT adapter directory (no adapter_config.json)")
    config = json.loads(config_path.read_text())
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise KnowlmError(f"{adapter}: only LoRA adapters can be merged, this is {config.get('peft_type')}")
    if config.get("use_dora"):
        raise KnowlmError(f"{adapter}: DoRA adapters are not supported by the streaming merge")
    weights = _adapter_weights(adapter)
    modules: dict[str, LoraModule] = {}
    replacements: dict[str, str] = {}
    token_rows: dict[str, tuple[str, list[int]]] = {}
    for key in weights.names():
        stripped = _strip_prefix(key)
        match = _LORA_KEY.match(stripped)
        if stripped.endswith(_TOKEN_DELTA):
            module = stripped[: -len(_TOKEN_DELTA)]
            token_rows[module + ".weight"] = (key, _token_indices(config, module))
            continue
        if not match:
            name = stripped.replace(".modules_to_save.default.", ".").replace(".modules_to_save.", ".")
            replacements[name.replace(".base_layer.", ".")] = key
            continue
        module, kind, param = match["module"], match["kind"], match["param"] or "weight"
        entry = modules.setdefault(module + ".weight", LoraModule(module=module))
        if kind in ("A", "embedding_A"):
            entry.A = key
        elif param == "bias":
            entry.B_bias = key
        else:
            entry.B = key
        entry.embedding = entry.embedding or kind.startswith("embedding")
    for weight_name, entry in modules.items():
        if entry.A is None or entry.B is None:
            raise KnowlmError(f"{adapter}: LoRA module {entry.module} lacks its {'A' if entry.A is None else 'B'} matrix")
        r = weights.info(entry.A).shape[0]
        alpha = _pattern_value(config.get("alpha_pattern"), entry.module, config.get("lora_alpha", 8))
        entry.rank = r
        entry.scaling = alpha / (math.sqrt(r) if config.get("use_rslora") else r)
    return config, weights, modules, replacements, token_rows


def _check_base(base: Path, ckpt: Checkpoint) -> None:
    config = read_config(base)
    if config.get("quantization_config"):
        method = config["quantization_config"].get("quant_method", "quantized")
        raise KnowlmError(f"{base} is a {method} quantised model: merge into the full-precision base instead")
    for name, info in ckpt.infos.items():
        if name.endswith(_QUANT_MARKERS) or (name.endswith(".weight") and not info.dtype.is_floating_point):
            raise KnowlmError(f"{base} holds quantised weights ({name}, {info.dtype}): merge into the full-precision base")


def merge_lora(
    base: str | os.PathLike,
    adapter: str | os.PathLike,
    output: str | os.PathLike,
    allow_noop: bool = False,
    max_shard_size: str | int = "5GB",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: bool = False,
) -> MergeSummary:
    """Write ``base`` with ``adapter`` merged in to ``output`` (a HF directory with knowlm.json)."""
    started = time.perf_counter()
    base, adapter = Path(base), Path(adapter)
    base_ckpt = Checkpoint(base)
    _check_base(base, base_ckpt)
    config, lora, modules, replacements, token_rows = read_adapter(adapter)
    fan_in_fan_out = bool(config.get("fan_in_fan_out"))
    vocab_size = _check_replacements(base_ckpt, lora, replacements)

    def source_shape(name: str) -> tuple[int, ...]:  # the tensor the update applies to (PEFT's base_layer if saved)
        return lora.info(replacements[name]).shape if name in replacements else base_ckpt.info(name).shape

    for weight_name, entry in modules.items():
        if weight_name not in base_ckpt:
            raise KnowlmError(
                f"adapter module {entry.module} has no matching base tensor {weight_name}: "
                "the adapter was trained on a different model (merging would silently do nothing)"
            )
        out_f, r = lora.info(entry.B).shape[0], entry.rank
        in_f = lora.info(entry.A).shape[1]
        transposed = entry.embedding or fan_in_fan_out
        expected = (in_f, out_f) if transposed else (out_f, in_f)
        if source_shape(weight_name) != expected:
            raise KnowlmError(
                f"{weight_name}: base shape {list(source_shape(weight_name))} does not fit the LoRA update {list(expected)} (r={r})"
            )
        if entry.B_bias is not None and entry.module + ".bias" not in base_ckpt:
            raise KnowlmError(f"adapter trains a bias for {entry.module} but the base has none")
    for weight_name, (key, rows) in token_rows.items():
        if weight_name not in base_ckpt:
            raise KnowlmError(f"adapter tensor {key} (trainable tokens) has no matching base tensor {weight_name}")
        n_rows, width = source_shape(weight_name)[0], source_shape(weight_name)[-1]
        if lora.info(key).shape != (len(rows), width) or (rows and not 0 <= min(rows) <= max(rows) < n_rows):
            raise KnowlmError(f"{key}: shape {list(lora.info(key).shape)} / indices do not fit {weight_name} {list(source_shape(weight_name))}")
    bias_targets = {e.module + ".bias": e for e in modules.values() if e.B_bias}

    summary = MergeSummary(output=str(output))
    unchanged: list[str] = []
    bar = progress_bar(base_ckpt.total_bytes, "merge", progress)
    with save_model_dir(output) as tmp:
        writer = ShardedWriter(tmp, max_shard_size)
        try:
            for name in base_ckpt.names():
                info = base_ckpt.info(name)
                summary.replaced += name in replacements
                if name in modules or name in bias_targets or name in token_rows:
                    src, src_name = (lora, replacements[name]) if name in replacements else (base_ckpt, name)
                    change, changed = _merge_tensor(src, src_name, lora, info, modules.get(name), bias_targets.get(name),
                                                    token_rows.get(name), fan_in_fan_out, writer, chunk_bytes)
                    summary.changes[name] = change
                    summary.merged += 1
                    if not changed:
                        unchanged.append(name)
                    if change > summary.largest_change:
                        summary.largest_change, summary.largest_change_tensor = change, name
                elif name in replacements:
                    writer.add(name, lora.tensor(replacements[name]).to(info.dtype))
                else:
                    writer.begin(name, info.shape, info.dtype)
                    for start, stop in chunk_ranges(info, chunk_bytes):
                        writer.write(base_ckpt.read(name, start, stop))
                    summary.copied += 1
                bar.update(info.nbytes)
            writer.close()
        finally:
            writer.abort()
            bar.close()
        if unchanged and not allow_noop:
            raise KnowlmError(
                f"merging left {len(unchanged)} of {summary.merged} targeted tensors unchanged (first: {unchanged[0]}): "
                "the adapter is untrained (B = 0) or its update is below the base dtype's precision; "
                "pass --allow-noop to write it anyway"
            )
        copy_side_files(base, tmp)
        if vocab_size is not None:
            _set_vocab_size(tmp, vocab_size)
        for name in _TOKENIZER_FILES:  # an SFT run may have saved its own tokenizer beside the adapter
            if (adapter / name).is_file():
                (tmp / name).write_bytes((adapter / name).read_bytes())
        summary.seconds = time.perf_counter() - started
        write_manifest(
            tmp,
            produced_by="knowlm weights merge-lora",
            arguments={"base": str(base), "adapter": str(adapter), "allow_noop": allow_noop},
            template=next(iter(manifest_template(base, adapter) or ()), None),  # the adapter's, else the base's
            base_model=str(base),
            adapter=str(adapter),
            lora={"r": config.get("r"), "lora_alpha": config.get("lora_alpha"), "use_rslora": bool(config.get("use_rslora")),
                  "fan_in_fan_out": fan_in_fan_out, "merged_tensors": summary.merged, "replaced_tensors": summary.replaced,
                  "largest_change": summary.largest_change, "largest_change_tensor": summary.largest_change_tensor},
        )
    base_ckpt.close()
    lora.close()
    return summary


def _check_replacements(base_ckpt: Checkpoint, lora: Checkpoint, replacements: dict[str, str]) -> int | None:
    """Every replacement must have a base tensor of its shape, except a resized vocabulary; returns the new vocab size."""
    vocab_size = None
    for base_name, key in replacements.items():
        if base_name not in base_ckpt:
            raise KnowlmError(f"adapter tensor {key} (modules_to_save / base_layer) has no matching base tensor {base_name}")
        have, want = lora.info(key).shape, base_ckpt.info(base_name).shape
        if have == want:
            continue
        if base_name.endswith(_RESIZABLE) and len(have) == len(want) == 2 and have[1] == want[1] and vocab_size in (None, have[0]):
            vocab_size = have[0]  # the vocabulary was resized before training (added tokens)
            continue
        raise KnowlmError(f"{base_name}: adapter copy has shape {list(have)}, base {list(want)}")
    return vocab_size


def _set_vocab_size(directory: Path, vocab_size: int) -> None:
    path = directory / "config.json"
    if path.is_file():
        config = json.loads(path.read_text())
        config["vocab_size"] = vocab_size
        path.write_text(json.dumps(config, indent=2) + "\n")


def _merge_tensor(src, src_name, lora, base_info, entry, bias_entry, rows, fan_in_fan_out, writer, chunk_bytes) -> tuple[float, bool]:
    """Merge one weight (or bias) in row chunks, reading it as ``src_name`` from ``src`` (the base checkpoint, or
    the adapter's saved base_layer); returns (largest |change| in fp32, changed after rounding)."""
    name, dtype = base_info.name, base_info.dtype
    info = src.info(src_name)
    largest, changed = 0.0, False
    if entry is not None:
        A = lora.tensor(entry.A).float()
        B = lora.tensor(entry.B).float()
        transposed = entry.embedding or fan_in_fan_out
    if rows is not None:
        row_index = torch.tensor(rows[1], dtype=torch.int64)
        row_values = lora.tensor(rows[0])
    writer.begin(name, info.shape, dtype)
    row = info.row_size
    for start, stop in chunk_ranges(info, chunk_bytes):
        w = src.read(src_name, start, stop).to(dtype)
        if entry is None and bias_entry is None:
            delta = torch.zeros(0)
        elif entry is not None:
            r0, r1 = start // row, stop // row
            if transposed:  # W is (in, out): rows are input features
                delta = (B @ A[:, r0:r1]).T * entry.scaling
            else:
                delta = (B[r0:r1] @ A) * entry.scaling
            delta = delta.reshape(-1)
        else:  # a trained LoRA bias: b' = b + scaling * lora_B.bias
            delta = lora.tensor(bias_entry.B_bias).float()[start:stop] * bias_entry.scaling
        merged = (w.float() + delta).to(dtype) if delta.numel() else w.clone()
        if delta.numel():
            largest = max(largest, float(delta.abs().max()))
        if rows is not None:  # trained token rows replace the merged ones (PEFT's index_copy)
            r0, r1 = start // row, stop // row
            hit = ((row_index >= r0) & (row_index < r1)).nonzero().flatten()
            if hit.numel():
                view = merged.view(r1 - r0, row)
                new = row_values[hit].to(dtype)
                largest = max(largest, float((new.float() - view[row_index[hit] - r0].float()).abs().max()))
                view[row_index[hit] - r0] = new
        changed = changed or not torch.equal(merged, w)
        writer.write(merged)
    return largest, changed
