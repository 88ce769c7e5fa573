"""Batched extraction vs KnowLM's one-text-at-a-time loop (generate_lora.py style).

Same model, same texts, same prompts, same greedy decoding and token budget: the baseline
calls the generator once per text (batch size 1, as KnowLM's script did); the project path is
``knowlm.ie.extract_texts`` with batch size 16. The model is a random LLaMA a little larger
than the test model (4 layers, hidden 256) so the forward pass, not Python overhead, dominates
as it does for real checkpoints. Prints texts/s for both, then ``ie_batch_speedup: ratio``.

Run: .venv/bin/python bench/bench_ie_batch.py [--texts 32] [--max-new-tokens 48] [--threads N]
GPU: .venv/bin/python bench/bench_ie_batch.py --device cuda --dtype bfloat16 [--model DIR] [--compile | --backend vllm]
(--backend vllm: the batched run goes through vLLM's offline engine; the loop baseline stays on the HF Generator)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def bench_texts(n: int) -> list[str]:
    from knowlm.data import split_sentences
    from knowlm.resources import iter_corpus

    out: list[str] = []
    for doc in iter_corpus():
        out += [s.strip() for s in split_sentences(doc["text"]) if len(s.strip()) > 10]
    out = list(dict.fromkeys(out)) or ["Marie Curie was born in Warsaw."]
    return [out[i % len(out)] for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    parser.add_argument("--model", default=None, help="model directory (default: a fresh random LLaMA, 4 layers, hidden 256)")
    parser.add_argument("--compile", action="store_true", help="Generator(compile=True): static KV cache, CUDA graphs on a GPU")
    parser.add_argument("--backend", default="hf", help="hf, or vllm for the batched run (CUDA)")
    args = parser.parse_args()

    import torch

    from knowlm.ie import extract_texts
    from knowlm.infer import DecodingParams, load_generator
    from knowlm.models.tiny import make_tiny

    if args.threads:
        torch.set_num_threads(args.threads)
    schema = ["place of birth", "located in", "founded by", "flows through"]
    texts = bench_texts(args.texts)
    params = DecodingParams(max_new_tokens=args.max_new_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or make_tiny(os.path.join(tmp, "m"), hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                                            num_key_value_heads=8)
        gen = load_generator(str(model_dir), dtype=args.dtype, device=args.device, compile=args.compile)
        tokenizer = gen.tokenizer
        extract_texts(gen, texts[:2], "re", schema, params=DecodingParams(max_new_tokens=4))  # warm-up

        # Baseline: KnowLM's loop, one text per generate call.
        stats_loop: dict = {}
        t0 = time.perf_counter()
        loop_tokens = 0
        for text in texts:
            one: dict = {}
            extract_texts(gen, [text], "re", schema, params=params, batch_size=1, stats=one)
            loop_tokens += one["generated_tokens"]
        loop_s = time.perf_counter() - t0

        if args.backend != "hf":
            import gc

            del gen
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # vLLM sizes its KV cache from the free GPU memory
            gen = load_generator(str(model_dir), dtype=args.dtype, backend=args.backend)
            extract_texts(gen, texts[:2], "re", schema, params=DecodingParams(max_new_tokens=4))  # warm-up
        stats_batch: dict = {}
        t0 = time.perf_counter()
        extract_texts(gen, texts, "re", schema, params=params, batch_size=args.batch_size, stats=stats_batch)
        batch_s = time.perf_counter() - t0

    print(f"model: {args.model or '4 layers, hidden 256'}, vocab {len(tokenizer)}; device {args.device}, dtype {args.dtype}, "
          f"compile {args.compile}, batched backend {args.backend}; torch threads {torch.get_num_threads()}")
    print(f"texts: {len(texts)}, schema: {len(schema)} relations (1 prompt per text), max_new_tokens {args.max_new_tokens}")
    print(f"one-at-a-time loop: {loop_s:.2f} s, {len(texts) / loop_s:.2f} texts/s, {loop_tokens} tokens")
    print(f"batched (batch {args.batch_size}, {args.backend}): {batch_s:.2f} s, {len(texts) / batch_s:.2f} texts/s, {stats_batch['generated_tokens']} tokens")
    print(f"ie_batch_speedup: {loop_s / batch_s:.2f}")


if __name__ == "__main__":
    main()
