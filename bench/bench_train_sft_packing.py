"""SFT effective throughput: non-padding tokens per second with packing / length grouping
against plain padded batches, on a dataset of mixed lengths (long-tailed, like real
instruction data). All three runs use the real `knowlm.train.sft` recipe on the same model and
data in this process; the figure is the loop's own tokens/s (padding excluded).

Packed rows carry position ids only (no dense 4-D mask): transformers builds varlen
flash-attention, a flex-attention block mask or an SDPA mask from them.

Run: .venv/bin/python bench/bench_train_sft_packing.py [--steps 12]                       # CPU, tiny model
     .venv/bin/python bench/bench_train_sft_packing.py --device cuda [--attn-implementation auto]
         # a TinyLlama-1.1B-shaped model (random weights), bf16, micro-batch 16, cutoff 512 (the issue's setting)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def mixed_length_records(n: int, seed: int = 0) -> list[dict]:
    """Answers from a few words to a few hundred (log-normal), as in alpaca/IE instruction sets."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = "the river city university was founded in born located flows through capital of".split()
    records = []
    for _ in range(n):
        length = int(min(400, max(3, rng.lognormal(mean=3.2, sigma=1.0))))
        answer = " ".join(rng.choice(words, size=length))
        records.append({"instruction": "Continue the text.", "input": " ".join(rng.choice(words, size=8)), "output": answer})
    return records


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--cutoff-len", type=int, default=512)
    parser.add_argument("--hidden-size", type=int, default=512,
                        help="wide enough that, as in real LLMs, the linear layers (not attention) dominate the FLOPs")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--attn-implementation", default="auto")
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the recipe takes a GPU whenever it sees one

    import torch

    from knowlm.models.tiny import make_tiny
    from knowlm.train import SFTConfig, sft

    work = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    extra_cfg: dict = {"attn_implementation": args.attn_implementation}
    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("bench_train_sft_packing: --device cuda needs a CUDA GPU; none here, not run")
            return
        from bench_train_mfu import build_model

        from knowlm.models.tiny import build_tokenizer

        model = build_model(work / "model", build_tokenizer(work / "tok"))
        args.micro_batch_size = 16 if args.micro_batch_size == 8 else args.micro_batch_size
        extra_cfg["precision"] = "bf16"
    else:
        model = make_tiny(work / "model", hidden_size=args.hidden_size, intermediate_size=int(args.hidden_size * 2.6875),
                          num_hidden_layers=2, num_attention_heads=max(1, args.hidden_size // 64),
                          num_key_value_heads=max(1, args.hidden_size // 64))
    data = work / "mixed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in mixed_length_records(2000)), encoding="utf-8")

    results = {}
    for name, extra in (("padded", {}), ("group_by_length", {"group_by_length": True}), ("packing", {"packing": True})):
        cfg = SFTConfig(model=str(model), data=[str(data)], output=str(work / name), method="lora",
                        micro_batch_size=args.micro_batch_size, max_steps=args.steps, cutoff_len=args.cutoff_len,
                        logging_steps=args.steps, strategy="single", seed=1, **extra, **extra_cfg)
        start = time.perf_counter()
        summary = sft(cfg, quiet=True)
        results[name] = summary
        print(f"{name:16s} non-padding tokens/s {summary['tokens_per_s']:9.1f}  tokens {summary['tokens']:7d}  "
              f"loop {summary['elapsed_s']:.1f}s  (run {time.perf_counter() - start:.1f}s)")
    base = results["padded"]["tokens_per_s"]
    group = results["group_by_length"]["tokens_per_s"] / base
    pack = results["packing"]["tokens_per_s"] / base
    print(f"group_by_length vs padded: {group:.2f}x")
    print(f"packing vs padded: {pack:.2f}x")
    print(f"bench_train_sft_packing: {max(group, pack):.2f}")


if __name__ == "__main__":
    main()
