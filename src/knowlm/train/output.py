"""What a run leaves behind: the output directory check, the trained weights (or adapter), the
best checkpoint, and the merged model.

Weights are saved in the base model's dtype unless ``--save-dtype`` says otherwise (a bf16
base trained with fp32 master weights comes back bf16, not twice its size), and the saved
``config.json`` gets back the ``use_cache`` value training switched off.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import torch

from knowlm.errors import KnowlmError
from knowlm.train import checkpoint as ckpt

SAVE_DTYPES = ("auto", "float32", "bfloat16", "float16")
RUN_FILES = ("metrics.jsonl", "train_summary.json", "loss.png")


def prepare_output(cfg, is_main: bool) -> Path | None:
    """Check the output directory (the policy of :mod:`knowlm.utils.outputs`: a non-empty one needs
    ``--resume`` or ``--overwrite``; never the model itself); return the checkpoint to resume from, if any."""
    from knowlm.utils.outputs import check_output

    output = Path(cfg.output)
    check_output(output, overwrite=True, kind="dir", inputs=[cfg.model])
    latest = ckpt.latest_checkpoint(output)
    if cfg.resume:
        return latest
    if cfg.overwrite:
        if is_main and output.exists():  # other ranks only read the directory much later
            shutil.rmtree(ckpt.checkpoint_root(output), ignore_errors=True)
            shutil.rmtree(output / "best", ignore_errors=True)
            for name in RUN_FILES:
                (output / name).unlink(missing_ok=True)
    elif latest is not None or (output / "metrics.jsonl").exists():
        raise KnowlmError(f"{output} holds an earlier run; pass --resume to continue it or --overwrite to start over")
    else:
        check_output(output, overwrite=False, kind="dir")
    return None


def base_dtype(model_dir: str) -> torch.dtype | None:
    """The dtype the base model's weights are stored in (``config.json``), if it says."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    name = config.get("dtype") or config.get("torch_dtype")
    value = getattr(torch, str(name), None) if name else None
    return value if isinstance(value, torch.dtype) else None


def target_dtype(save_dtype: str, model_dir: str, is_adapter: bool) -> torch.dtype | None:
    """The dtype to write floating tensors in (None: as they are)."""
    if save_dtype != "auto":
        return getattr(torch, save_dtype)
    return None if is_adapter else base_dtype(model_dir)


def _cast(state: dict, dtype: torch.dtype | None) -> dict:
    if dtype is None:
        return state
    return {k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in state.items()}


def save_model(runtime, tokenizer, cfg, directory: Path, produced_by: str, template: str | None, summary: dict,
               state: dict | None = None) -> None:
    """Write weights (full model or PEFT adapter), tokenizer and ``knowlm.json`` into ``directory``.

    Collective: every rank calls it (``full_state_dict`` gathers sharded weights). Written through
    :func:`knowlm.utils.outputs.save_model_dir`: into a temporary folder, then moved in together,
    ``knowlm.json`` last (its presence means the output is complete); the run's checkpoints and
    metrics beside the model, and any file of the user's, stay.
    """
    state = runtime.full_state_dict() if state is None else state
    if runtime.env.is_main:
        from knowlm.models import write_manifest
        from knowlm.utils.outputs import save_model_dir

        with save_model_dir(directory) as tmp:
            _write_model(runtime, tokenizer, cfg, tmp, state)
            write_manifest(
                tmp, produced_by=produced_by, arguments=dataclasses.asdict(cfg), template=template,
                base_model=cfg.model, method=cfg.method, adapter=hasattr(runtime.module, "peft_config"),
                final_loss=summary.get("final_loss"), eval_loss=summary.get("eval_loss"), steps=summary.get("steps"),
                **({"best": summary["best"]} if summary.get("best") else {}),
            )
    runtime.barrier()


def _write_model(runtime, tokenizer, cfg, tmp: Path, state: dict) -> None:
    """Weights (in the dtype to save), tokenizer and a corrected ``config.json`` into ``tmp``."""
    module = runtime.module
    is_peft = hasattr(module, "peft_config")
    dtype = target_dtype(getattr(cfg, "save_dtype", "auto"), cfg.model, is_peft)
    config = getattr(module, "config", None)
    use_cache = getattr(module, "_knowlm_use_cache", None)
    if config is not None and use_cache is not None:
        config.use_cache = use_cache  # training switched it off; generation wants it back
    try:
        module.save_pretrained(str(tmp), state_dict=_cast(state, dtype))
    finally:
        if config is not None and use_cache is not None:
            config.use_cache = False
    tokenizer.save_pretrained(str(tmp))
    source = Path(cfg.model)
    if (source / "tokenizer.model").is_file():
        shutil.copy2(source / "tokenizer.model", tmp / "tokenizer.model")
    if is_peft:
        check_adapter(tmp)
    elif (tmp / "config.json").is_file():
        saved = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        if runtime.architectures:
            saved["architectures"] = runtime.architectures  # not the engine's wrapper class name
        if dtype is not None:
            saved["dtype"] = str(dtype).removeprefix("torch.")
        if use_cache is not None:
            saved["use_cache"] = use_cache
        (tmp / "config.json").write_text(json.dumps(saved, indent=2), encoding="utf-8")


def merge_adapter(cfg, output: Path) -> Path:
    """``OUTPUT/merged``: the base model with the trained adapter merged in (rank 0).

    LoRA/rsLoRA stream tensor by tensor through ``knowlm weights merge-lora``; DoRA (whose update
    depends on the merged weight's norm) is merged by PEFT in memory, on CPU, in the base dtype.
    """
    merged = output / "merged"
    if not getattr(cfg, "use_dora", False):
        from knowlm.weights import merge_lora

        merge_lora(cfg.model, output, merged, allow_noop=True)
        return merged
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from knowlm.models import read_manifest, write_manifest
    from knowlm.utils.outputs import save_model_dir

    base = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=base_dtype(cfg.model) or torch.float32, use_kernels=False)
    model = PeftModel.from_pretrained(base, str(output)).merge_and_unload()
    with save_model_dir(merged) as tmp:
        model.save_pretrained(str(tmp))
        AutoTokenizer.from_pretrained(str(output)).save_pretrained(str(tmp))
        if (output / "tokenizer.model").is_file():
            shutil.copy2(output / "tokenizer.model", tmp / "tokenizer.model")
        write_manifest(tmp, produced_by="knowlm train (--merge-at-end, DoRA)", template=read_manifest(output).get("template"),
                       base_model=cfg.model, adapter=str(output))
    return merged


def check_adapter(directory: Path) -> int:
    """A saved adapter must hold non-empty LoRA tensors (ZeRO-3 partitioning can silently save empty ones)."""
    from safetensors import safe_open

    path = directory / "adapter_model.safetensors"
    if not path.is_file():
        raise KnowlmError(f"adapter was not saved: {path} missing")
    numel = 0
    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        for key in keys:
            numel += math.prod(handle.get_slice(key).get_shape())
    if not keys or numel == 0:
        raise KnowlmError(f"saved adapter {path} is empty ({len(keys)} tensors, {numel} values)")
    return numel
