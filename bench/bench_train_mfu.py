"""Pretraining model FLOPs utilisation (MFU) of a ~1.1B LLaMA in bf16 on one GPU.

Runs the real `knowlm.train.pretrain` recipe (single process, fp32 master weights + bf16
autocast or `--precision bf16-pure`, `--attn-implementation auto` = flash-attention 2 when
installed else SDPA, fused AdamW, chunked cross-entropy, batches prefetched and pinned,
optional `--compile` of each decoder layer) on random tokens written as a Megatron indexed
dataset, and reads the MFU the loop logs (6N + 12·L·H·T FLOPs per token against the GPU's dense
bf16 peak; `KNOWLM_PEAK_FLOPS` overrides the peak). The baseline in the same process is the
issue's target of 45% MFU, so the last line is `bench_train_mfu: MFU / 0.45`.

Needs CUDA (`--device cuda`, the default); elsewhere it says so and exits 0 without a ratio line.

Run: .venv/bin/python bench/bench_train_mfu.py --device cuda [--steps 30] [--micro-batch-size 8] [--seq-len 2048]
     [--precision bf16|bf16-pure] [--attn-implementation auto|sdpa|flash_attention_2|flex_attention] [--compile]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# TinyLlama-1.1B shape: a ~1B LLaMA that fits one GPU with AdamW and fp32 master weights.
CONFIG_1B = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4, vocab_size=32000, max_position_embeddings=4096)
TARGET = 0.45


def build_model(directory: Path, tokenizer_dir: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**CONFIG_1B, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    model.save_pretrained(str(directory))
    for item in tokenizer_dir.iterdir():  # any tokenizer will do: the data are random ids
        if item.is_file() and item.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy2(item, directory / item.name)
    return directory


def build_data(prefix: Path, num_sequences: int, seq_len: int) -> str:
    import numpy as np

    from knowlm.data.indexed import IndexedDatasetWriter

    rng = np.random.default_rng(0)
    writer = IndexedDatasetWriter(str(prefix), dtype=np.uint16)
    for _ in range(num_sequences):
        writer.add_document([rng.integers(3, CONFIG_1B["vocab_size"], size=seq_len, dtype=np.int64)])
    writer.finalize()
    return str(prefix)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--precision", default="bf16", choices=("bf16", "bf16-pure"))
    parser.add_argument("--attn-implementation", default="auto")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()

    import torch

    if args.device != "cuda" or not torch.cuda.is_available():
        print("bench_train_mfu: needs a CUDA GPU (--device cuda); none here, not run")
        return
    from knowlm.models.tiny import build_tokenizer
    from knowlm.train import PretrainConfig, pretrain
    from knowlm.train.metrics import read_metrics

    work = Path(tempfile.mkdtemp(prefix="bench-mfu-"))
    tokenizer = build_tokenizer(work / "tok")
    model = build_model(work / "model", tokenizer)
    data = build_data(work / "random", args.steps * args.micro_batch_size + 8, args.seq_len)
    cfg = PretrainConfig(model=str(model), data=[data], output=str(work / "out"), seq_len=args.seq_len,
                         micro_batch_size=args.micro_batch_size, max_steps=args.steps, learning_rate=1e-4,
                         warmup_steps=2, logging_steps=5, precision=args.precision, strategy="single",
                         gradient_checkpointing=args.gradient_checkpointing, attn_implementation=args.attn_implementation,
                         compile=args.compile)
    summary = pretrain(cfg, quiet=True)
    records = [r for r in read_metrics(cfg.output) if "mfu" in r][1:]  # the first window includes warm-up
    mfu = sum(r["mfu"] for r in records) / len(records)
    tps = sum(r["tokens_per_s"] for r in records) / len(records)
    print(json.dumps({"device": torch.cuda.get_device_name(0), "params": summary["total_params"],
                      "config": {**CONFIG_1B, "seq_len": args.seq_len, "micro_batch_size": args.micro_batch_size,
                                 "precision": args.precision, "attn_implementation": args.attn_implementation,
                                 "compile": args.compile, "gradient_checkpointing": args.gradient_checkpointing},
                      "tokens_per_s": round(tps), "mfu": round(mfu, 4),
                      "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1)}, indent=2))
    print(f"MFU {mfu:.1%} (target {TARGET:.0%}), {tps:,.0f} tokens/s")
    print(f"bench_train_mfu: {mfu / TARGET:.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
