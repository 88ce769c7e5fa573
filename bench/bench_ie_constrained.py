"""Per-token cost of schema-constrained decoding (xgrammar) vs unconstrained decoding.

Same model, prompts and greedy decoding. Per-token time excludes the prompt (prefill): each
mode is timed at ``max_new_tokens`` N and at 1, and the difference is divided by the extra
tokens generated. Bounds are wide (8 items, 48 characters per span) so the constrained answer
is not cut short by the grammar. The model is the benchmark model of bench_ie_batch.py
(4 layers, hidden 256). Prints both, then ``ie_constrained_overhead: ratio`` (constrained /
unconstrained seconds per token; target <= 1.15).

Run: .venv/bin/python bench/bench_ie_constrained.py [--prompts 16] [--max-new-tokens 64]
GPU: .venv/bin/python bench/bench_ie_constrained.py --device cuda --dtype bfloat16 [--model DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    parser.add_argument("--model", default=None, help="model directory (default: a fresh random LLaMA, 4 layers, hidden 256)")
    args = parser.parse_args()

    import torch

    from bench_ie_batch import bench_texts
    from knowlm.ie.constrained import Bounds, processor_factory
    from knowlm.ie.prompts import build_prompt
    from knowlm.infer import DecodingParams, load_generator
    from knowlm.models.tiny import make_tiny

    if args.threads:
        torch.set_num_threads(args.threads)
    schema = ["人物", "地点", "组织机构", "person", "location", "organization"]
    texts = bench_texts(args.prompts)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or make_tiny(os.path.join(tmp, "m"), hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                                            num_key_value_heads=8)
        gen = load_generator(str(model_dir), dtype=args.dtype, device=args.device)
    prompts = [gen.prompt(*build_prompt("ner", t, schema)) for t in texts]
    bounds = Bounds(max_items=8, max_chars=48)
    t0 = time.perf_counter()
    factory = processor_factory(gen, "ner", [schema] * len(prompts), bounds)
    compile_s = time.perf_counter() - t0

    def run(constrained: bool, n: int) -> tuple[float, int]:
        best, tokens = float("inf"), 0
        for _ in range(args.repeats):
            t = time.perf_counter()
            outs = gen.generate(prompts, DecodingParams(max_new_tokens=n), batch_size=len(prompts), logits_processor=factory if constrained else None)
            best = min(best, time.perf_counter() - t)
            tokens = sum(o.num_tokens for o in outs)
        return best, tokens

    run(False, 2), run(True, 2)  # warm-up
    free_full, free_tok = run(False, args.max_new_tokens)
    free_one, free_one_tok = run(False, 1)
    con_full, con_tok = run(True, args.max_new_tokens)
    con_one, con_one_tok = run(True, 1)
    free_pt = (free_full - free_one) / max(1, free_tok - free_one_tok)
    con_pt = (con_full - con_one) / max(1, con_tok - con_one_tok)
    print(f"model: {args.model or '4 layers, hidden 256'}, vocab {len(gen.tokenizer)}; device {args.device}, dtype {args.dtype}; "
          f"torch threads {torch.get_num_threads()}")
    print(f"{len(prompts)} prompts in one batch, NER schema of {len(schema)} types (zh+en keys), grammar compile {compile_s * 1000:.0f} ms")
    print(f"unconstrained: {free_full:.2f} s for {free_tok} tokens, {free_pt * 1000:.3f} ms/token after prefill")
    print(f"constrained:   {con_full:.2f} s for {con_tok} tokens, {con_pt * 1000:.3f} ms/token after prefill")
    print(f"ie_constrained_overhead: {con_pt / free_pt:.3f}")


if __name__ == "__main__":
    main()
