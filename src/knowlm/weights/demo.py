"""The weights stage of ``knowlm demo``: merge the SFT LoRA adapter, export GGUF, check it loads."""

from __future__ import annotations

import time
from pathlib import Path

from knowlm.weights.gguf_export import export_gguf
from knowlm.weights.lora import merge_lora


def demo_stage(workdir, base_dir, adapter_dir, gguf_type: str = "q8_0") -> dict:
    """Merge ``adapter_dir`` into ``base_dir`` (-> ``workdir/merged``), export ``workdir/merged-<type>.gguf``,
    and read the GGUF back through transformers' loader to compare next-token logits with the merged model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    workdir = Path(workdir)
    merged_dir = workdir / "merged"
    merge = merge_lora(base_dir, adapter_dir, merged_dir)
    gguf_path = workdir / f"merged-{gguf_type}.gguf"
    gguf = export_gguf(merged_dir, gguf_path, type=gguf_type)

    tokenizer = AutoTokenizer.from_pretrained(str(merged_dir))
    ids = torch.tensor([tokenizer("浙江大学位于杭州。Zhejiang University is in Hangzhou.").input_ids])
    reference = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32)
    reread = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    with torch.no_grad():
        a, b = reference(ids).logits, reread(ids).logits
    return {
        "merged_model": str(merged_dir),
        "merged_tensors": merge.merged,
        "largest_lora_change": merge.largest_change,
        "largest_lora_change_tensor": merge.largest_change_tensor,
        "gguf": str(gguf_path),
        "gguf_type": gguf_type,
        "gguf_bytes": gguf.bytes,
        "gguf_max_logit_diff": float((a - b).abs().max()),
        "gguf_same_greedy_tokens": bool(torch.equal(a.argmax(-1), b.argmax(-1))),
        "seconds": round(time.perf_counter() - started, 2),
    }
