"""Weight differences: publish ``target - base`` and recover ``base + diff``, verified.

KnowLM released its 13B model as a difference from LLaMA-13B. Its recovery script loaded both
fp32 models whole (~100 GB of RAM) and checked the result with one number (the sum of all
weights). Here both directions stream tensor by tensor, and the diff carries, in its
``knowlm.json``, the SHA-256 of every tensor the recovery must produce, so a wrong base or a
damaged shard is named, and nothing is written.

Exactness: float addition does not always undo subtraction -- ``(t - b) + b`` can differ from
``t`` in the last bit (always when ``|t|`` is much smaller than ``|b|``). When the diff keeps the
target's dtype, the elements that would not come back bit-exact are stored verbatim as a sparse
fixup (``NAME.knowlm_fix_index`` / ``NAME.knowlm_fix_value``), so recovery is bit-exact by
construction. With ``dtype=float16`` the diff is lossy by choice; the manifest then records the
checksum of what recovery will produce (deterministic IEEE arithmetic) and the largest error.

Recovery arithmetic, the one rule both sides share: ``(base.to(c) + diff.to(c)).to(target)`` with
``c = float64`` for float64 targets, else ``float32``.

KnowLM's own diffs (``pytorch_model-*.bin`` + index, no manifest, transformers-4.28 layout with
``rotary_emb.inv_freq`` buffers) recover too; see :mod:`.legacy` for the buffers and for what
``expected_sum`` (KnowLM's naive check, 94052.2891 for ZhiXi-13B) is computed over.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field

import torch

from knowlm.errors import KnowlmError
from knowlm.models.manifest import read_manifest, write_manifest
from knowlm.utils.outputs import save_model_dir
from knowlm.weights.checkpoint_reader import Checkpoint
from knowlm.weights.checkpoint_writer import ShardedWriter, copy_side_files, set_config_dtype
from knowlm.weights.tensor_io import (
    DEFAULT_CHUNK_BYTES,
    TensorInfo,
    chunk_ranges,
    dtype_from_name,
    dtype_name,
    progress_bar,
    read_config,
    tensor_bytes,
)
from knowlm.weights.legacy import is_rotary_buffer, knowlm_sum, rotary_inv_freq

DIFF_FORMAT = "knowlm-weight-diff/1"
FIX_INDEX = ".knowlm_fix_index"
FIX_VALUE = ".knowlm_fix_value"
KNOWLM_13B_SUM = 94052.2891  # KnowLM's published naive check for ZhiXi-13B


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def recover_chunk(base: torch.Tensor, diff: torch.Tensor, target_dtype: torch.dtype) -> torch.Tensor:
    """The single arithmetic rule of recovery (see module docstring)."""
    c = _compute_dtype(target_dtype)
    return (base.to(c) + diff.to(c)).to(target_dtype)


def _bits(t: torch.Tensor) -> torch.Tensor:
    """An integer view for bitwise comparison (NaN == NaN, -0 != +0)."""
    ints = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}
    if t.dtype == torch.bool:
        return t.to(torch.uint8)
    return t.view(ints[t.element_size()])


def _is_float(dtype: torch.dtype) -> bool:
    return dtype.is_floating_point


@dataclass
class DiffSummary:
    output: str
    tensors: int = 0
    bytes_written: int = 0
    exact: bool = True
    fixups: int = 0
    max_abs_error: float = 0.0
    ignored_base_tensors: list[str] = field(default_factory=list)
    skipped_buffers: int = 0  # transformers-4.28 rotary_emb.inv_freq buffers of the target (derived from the config)
    seconds: float = 0.0


def make_diff(
    base: str | os.PathLike,
    target: str | os.PathLike,
    output: str | os.PathLike,
    dtype: str | None = None,
    max_shard_size: str | int = "5GB",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: bool = False,
) -> DiffSummary:
    """Write ``target - base`` to ``output`` with per-tensor checksums of the target."""
    started = time.perf_counter()
    diff_dtype = dtype_from_name(dtype)
    base_ckpt, target_ckpt = Checkpoint(base), Checkpoint(target)
    names = [n for n in target_ckpt.names() if not is_rotary_buffer(n)]
    _check_names(names, base_ckpt, what="target", other_label="base")
    summary = DiffSummary(output=str(output), exact=diff_dtype is None)
    summary.skipped_buffers = len(target_ckpt) - len(names)
    summary.ignored_base_tensors = [n for n in base_ckpt.names() if n not in target_ckpt]
    records: dict[str, dict] = {}
    bar = progress_bar(target_ckpt.total_bytes, "diff", progress)
    with save_model_dir(output) as tmp:
        writer = ShardedWriter(tmp, max_shard_size)
        try:
            for name in names:
                t_info, b_info = target_ckpt.info(name), base_ckpt.info(name)
                if t_info.shape != b_info.shape:
                    raise KnowlmError(f"shape mismatch for {name}: base {list(b_info.shape)} vs target {list(t_info.shape)}")
                records[name] = _diff_tensor(base_ckpt, target_ckpt, t_info, diff_dtype, writer, chunk_bytes, bar)
                summary.fixups += records[name]["fixups"]
                summary.max_abs_error = max(summary.max_abs_error, records[name]["max_abs_error"])
                summary.tensors += 1
            files = writer.close()
        finally:
            writer.abort()
            bar.close()
        copy_side_files(target, tmp)
        stored = {r["diff_dtype"] for r in records.values()}
        if len(stored) == 1:
            set_config_dtype(tmp, dtype_from_name(next(iter(stored))) or torch.float32)
        summary.bytes_written = sum(f.stat().st_size for f in files)
        summary.seconds = time.perf_counter() - started
        write_manifest(
            tmp,
            produced_by="knowlm weights diff",
            arguments={"base": str(base), "target": str(target), "dtype": dtype},
            template=read_manifest(target).get("template"),
            base_model=str(base),
            diff={
                "format": DIFF_FORMAT,
                "exact": summary.exact,
                "rule": "(base.to(c) + diff.to(c)).to(dtype), c = float64 for float64 else float32; then fixups",
                "tensors": records,
            },
        )
    base_ckpt.close()
    target_ckpt.close()
    return summary


def _check_names(names: list[str], other: Checkpoint, what: str, other_label: str) -> None:
    missing = [n for n in names if n not in other]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise KnowlmError(f"tensor {missing[0]} of the {what} is not in the {other_label}{more}: not the same architecture?")


def _diff_tensor(base_ckpt, target_ckpt, info: TensorInfo, diff_dtype, writer, chunk_bytes, bar) -> dict:
    name, t_dtype = info.name, info.dtype
    sha_t, sha_r, sha_b = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()
    fix_idx, fix_val = [], []
    max_err = 0.0
    if not _is_float(t_dtype):
        # integer buffers are copied verbatim; recovery ignores the base for them
        writer.begin(name, info.shape, t_dtype)
        for start, stop in chunk_ranges(info, chunk_bytes):
            t = target_ckpt.read(name, start, stop)
            sha_t.update(tensor_bytes(t))
            writer.write(t)
            bar.update(t.numel() * t.element_size())
        digest = sha_t.hexdigest()
        return {"shape": list(info.shape), "dtype": dtype_name(t_dtype), "diff_dtype": dtype_name(t_dtype), "mode": "copy",
                "sha256": digest, "recovered_sha256": digest, "fixups": 0, "max_abs_error": 0.0}
    d_dtype = diff_dtype or t_dtype
    exact = d_dtype == t_dtype
    c = _compute_dtype(t_dtype)
    writer.begin(name, info.shape, d_dtype)
    for start, stop in chunk_ranges(info, chunk_bytes):
        t = target_ckpt.read(name, start, stop)
        b = base_ckpt.read(name, start, stop)
        d = (t.to(c) - b.to(c)).to(d_dtype)
        r = recover_chunk(b, d, t_dtype)
        sha_t.update(tensor_bytes(t))
        sha_b.update(tensor_bytes(b))
        if exact:
            bad = (_bits(r) != _bits(t)).nonzero().flatten()
            if bad.numel():
                fix_idx.append(bad + start)
                fix_val.append(t[bad])
                r[bad] = t[bad]
        else:
            err = (r.to(c) - t.to(c)).abs()
            if err.numel():
                max_err = max(max_err, float(err.nan_to_num(0.0).max()))
        sha_r.update(tensor_bytes(r))
        writer.write(d)
        bar.update(t.numel() * t.element_size())
    n_fix = sum(len(i) for i in fix_idx)
    if n_fix:
        writer.add(name + FIX_INDEX, torch.cat(fix_idx).to(torch.int64))
        writer.add(name + FIX_VALUE, torch.cat(fix_val))
    return {
        "shape": list(info.shape),
        "dtype": dtype_name(t_dtype),
        "diff_dtype": dtype_name(d_dtype),
        "mode": "add",
        "sha256": sha_t.hexdigest(),
        "recovered_sha256": sha_r.hexdigest(),
        "base_sha256": sha_b.hexdigest(),
        "fixups": n_fix,
        "max_abs_error": max_err,
    }


@dataclass
class RecoverSummary:
    output: str
    tensors: int = 0
    verified: int = 0
    mode: str = "manifest"  # or "legacy"
    weight_sum: float = 0.0
    expected_sum: float | None = None
    bytes_written: int = 0
    ignored_base_tensors: list[str] = field(default_factory=list)
    skipped_buffers: int = 0  # transformers-4.28 rotary_emb.inv_freq buffers of the diff, not written (see .legacy)
    seconds: float = 0.0

    @property
    def verification(self) -> str:
        if self.mode == "manifest":
            return f"all {self.verified} tensors match the SHA-256 in the diff manifest"
        if self.expected_sum is not None:
            return f"naive sum check passed: {self.weight_sum:.4f} ~ {self.expected_sum:.4f}"
        return "UNVERIFIED: the diff has no manifest; pass --expected-sum to run KnowLM's naive check"


def recover(
    base: str | os.PathLike,
    diff: str | os.PathLike,
    output: str | os.PathLike,
    expected_sum: float | None = None,
    sum_tolerance: float = 1e-2,
    max_shard_size: str | int = "5GB",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: bool = False,
) -> RecoverSummary:
    """Write ``base + diff`` to ``output``, verifying every tensor; on any failure nothing is left.

    ``expected_sum`` is KnowLM's naive check (``tools/weight_diff.py``): the sum of every tensor of
    the recovered state dict *as transformers 4.28 held it* -- rotary ``inv_freq`` buffers included
    (diff + base, the base's rebuilt from the config when it has none) -- float32 per-tensor sums
    accumulated in float32 in module order, within ``sum_tolerance`` (KnowLM's ``atol=1e-2``).
    For ZhiXi-13B (fp32 diff) it is 94052.2891.
    """
    started = time.perf_counter()
    base_ckpt, diff_ckpt = Checkpoint(base), Checkpoint(diff)
    manifest = read_manifest(diff).get("diff")
    if manifest is not None and manifest.get("format") != DIFF_FORMAT:
        raise KnowlmError(f"{diff}: unknown diff format {manifest.get('format')!r}")
    summary = RecoverSummary(output=str(output), mode="manifest" if manifest else "legacy", expected_sum=expected_sum)
    if manifest:
        names = list(manifest["tensors"])
        absent = [n for n in names if n not in diff_ckpt]
        if absent:
            raise KnowlmError(f"tensor {absent[0]} listed in the diff manifest is missing from the diff shards")
    else:
        names = diff_ckpt.names()
    buffers = [n for n in names if is_rotary_buffer(n)]
    names = [n for n in names if not is_rotary_buffer(n)]
    summary.skipped_buffers = len(buffers)
    for name in names:
        if name not in base_ckpt:
            mode = manifest["tensors"][name].get("mode") if manifest else "add"
            if mode != "copy":
                raise KnowlmError(f"tensor {name} of the diff is not in the base {base}: not the base this diff was made from?")
    summary.ignored_base_tensors = [n for n in base_ckpt.names() if n not in set(names) and not is_rotary_buffer(n)]
    total = sum(diff_ckpt.info(n).nbytes for n in names)
    bar = progress_bar(total, "recover", progress)
    want_sums = manifest is None or expected_sum is not None
    sums: dict[str, float] = {}
    with save_model_dir(output) as tmp:
        writer = ShardedWriter(tmp, max_shard_size)
        try:
            for name in names:
                record = manifest["tensors"][name] if manifest else None
                sums[name] = _recover_tensor(base_ckpt, diff_ckpt, name, record, writer, chunk_bytes, bar, base, want_sums)
                summary.tensors += 1
                summary.verified += record is not None
            files = writer.close()
        finally:
            writer.abort()
            bar.close()
        if want_sums:
            sums.update({n: _buffer_sum(base_ckpt, diff_ckpt, n, diff) for n in buffers})
        summary.weight_sum = weight_sum = knowlm_sum(sums) if want_sums else 0.0
        if expected_sum is not None and abs(weight_sum - expected_sum) > sum_tolerance:
            raise KnowlmError(
                f"naive integrity check failed: the recovered weights sum to {weight_sum:.4f}, expected "
                f"{expected_sum:.4f} (tolerance {sum_tolerance}): wrong base model or damaged diff"
            )
        copy_side_files(diff, tmp)
        dtypes = {diff_ckpt.info(n).dtype for n in names} if not manifest else {
            dtype_from_name(r["dtype"]) for r in manifest["tensors"].values() if r["dtype"] in ("float32", "float16", "bfloat16", "float64")
        }
        if len(dtypes) == 1:
            set_config_dtype(tmp, next(iter(dtypes)))
        summary.bytes_written = sum(f.stat().st_size for f in files)
        summary.seconds = time.perf_counter() - started
        write_manifest(
            tmp,
            produced_by="knowlm weights recover",
            arguments={"base": str(base), "diff": str(diff), "expected_sum": expected_sum},
            template=read_manifest(diff).get("template"),
            base_model=str(base),
            verification=summary.verification,
            weight_sum=weight_sum,
        )
    base_ckpt.close()
    diff_ckpt.close()
    return summary


def _buffer_sum(base_ckpt: Checkpoint, diff_ckpt: Checkpoint, name: str, diff_path) -> float:
    """The sum of a 4.28 ``inv_freq`` buffer after KnowLM's recovery: diff + base (rebuilt from the config if absent)."""
    d = diff_ckpt.tensor(name).float()
    b = base_ckpt.tensor(name).float() if name in base_ckpt else rotary_inv_freq(read_config(diff_path))
    if b.shape != d.shape:
        raise KnowlmError(f"{name}: the diff's buffer has shape {list(d.shape)} but the config gives {list(b.shape)} "
                          "(head_dim / 2): config.json does not describe this diff")
    return float((d + b).sum(dtype=torch.float64))


def _recover_tensor(base_ckpt, diff_ckpt, name, record, writer, chunk_bytes, bar, base_path, want_sum: bool) -> float:
    """Recover one tensor chunk by chunk; returns its float64 sum when ``want_sum`` (for the naive check)."""
    d_info = diff_ckpt.info(name)
    if record is not None:
        target_dtype = dtype_from_name(record["dtype"]) if record["dtype"] in ("float32", "float16", "bfloat16", "float64") else d_info.dtype
        if list(d_info.shape) != record["shape"]:
            raise KnowlmError(f"tensor {name}: diff shape {list(d_info.shape)} differs from the manifest's {record['shape']}")
        mode = record.get("mode", "add")
    else:
        target_dtype, mode = d_info.dtype, ("add" if _is_float(d_info.dtype) else "copy")
    if mode == "add":
        b_info = base_ckpt.info(name)
        if b_info.shape != d_info.shape:
            raise KnowlmError(f"shape mismatch for {name}: base {list(b_info.shape)} vs diff {list(d_info.shape)}: wrong base model?")
    fix_idx = fix_val = None
    if record is not None and record.get("fixups"):
        if name + FIX_INDEX not in diff_ckpt or name + FIX_VALUE not in diff_ckpt:
            raise KnowlmError(f"tensor {name}: the diff is missing its fixup tensors")
        fix_idx, fix_val = diff_ckpt.tensor(name + FIX_INDEX), diff_ckpt.tensor(name + FIX_VALUE).to(target_dtype)
    sha = hashlib.sha256()
    total = 0.0
    writer.begin(name, d_info.shape, target_dtype)
    for start, stop in chunk_ranges(d_info, chunk_bytes):
        d = diff_ckpt.read(name, start, stop)
        if mode == "copy":
            r = d.to(target_dtype)
        else:
            r = recover_chunk(base_ckpt.read(name, start, stop), d, target_dtype)
            if fix_idx is not None:
                lo, hi = torch.searchsorted(fix_idx, torch.tensor([start, stop])).tolist()
                if hi > lo:
                    r[fix_idx[lo:hi] - start] = fix_val[lo:hi]
        if record is not None:
            sha.update(tensor_bytes(r))
        if want_sum and _is_float(r.dtype):
            total += float(r.sum(dtype=torch.float64))
        writer.write(r)
        bar.update(d.numel() * d.element_size())
    if record is not None and sha.hexdigest() != record["recovered_sha256"]:
        raise KnowlmError(_mismatch_message(base_ckpt, name, record, d_info, chunk_bytes, base_path))
    return total


def _mismatch_message(base_ckpt, name, record, d_info, chunk_bytes, base_path) -> str:
    """Say whether the base or the diff is to blame for a checksum mismatch (re-reads one tensor)."""
    head = f"tensor {name} does not match the diff manifest's checksum after recovery"
    if record.get("mode") == "add" and record.get("base_sha256"):
        sha = hashlib.sha256()
        for start, stop in chunk_ranges(base_ckpt.info(name), chunk_bytes):
            sha.update(tensor_bytes(base_ckpt.read(name, start, stop)))
        if sha.hexdigest() != record["base_sha256"]:
            return f"{head}: the base {base_path} is not the model this diff was made from (its {name} differs); nothing was written"
    return f"{head}: the diff shard {d_info.file.name} is corrupted (the base matches); nothing was written"
