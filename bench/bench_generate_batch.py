"""Batched generation vs one prompt at a time (how KnowLM's generate scripts looped), same model
and prompts, greedy, fixed number of new tokens. Prints generated tokens/s for both.

CPU:  .venv/bin/python bench/bench_generate_batch.py
GPU:  .venv/bin/python bench/bench_generate_batch.py --device cuda --dtype bfloat16 [--model DIR] [--compile]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _harness import report, timer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    parser.add_argument("--model", default=None, help="model directory (default: a fresh tiny LLaMA, 4 layers, hidden 256)")
    parser.add_argument("--compile", action="store_true", help="Generator(compile=True): static KV cache, CUDA graphs on a GPU")
    parser.add_argument("--threads", type=int, default=2, help="CPU: torch threads")
    args = parser.parse_args()

    import torch
    from transformers import LogitsProcessor

    from knowlm.infer import DecodingParams, load_generator
    from knowlm.models.tiny import make_tiny
    from knowlm.resources import iter_corpus

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or make_tiny(Path(tmp) / "m", hidden_size=256, intermediate_size=688, num_hidden_layers=4)
        generator = load_generator(str(model_dir), dtype=args.dtype, device=args.device, compile=args.compile)
        tokenizer = generator.tokenizer
        docs = [d["text"][:200] for d in iter_corpus()][: args.prompts]
        prompts = [generator.prompt("Summarise the text.", doc) for doc in docs]
        eos = tokenizer.eos_token_id

        class NoEos(LogitsProcessor):  # fixed-length answers make both paths do the same work
            def __call__(self, input_ids, scores):
                scores[:, eos] = -float("inf")
                return scores

        def sync():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()

        params = DecodingParams(max_new_tokens=args.new_tokens)
        if args.device != "cpu" or args.compile:  # CUDA start-up and compilation are not generation
            generator.generate(prompts, params, batch_size=args.batch_size, logits_processor=lambda idx: [NoEos()])
            generator.generate(prompts[:1], params, logits_processor=lambda idx: [NoEos()])
        times: dict = {}
        with timer(times, "baseline"):
            for prompt in prompts:
                generator.generate([prompt], params, logits_processor=lambda idx: [NoEos()])
            sync()
        with timer(times, "batched"):
            generator.generate(prompts, params, batch_size=args.batch_size, logits_processor=lambda idx: [NoEos()])
            sync()
        tokens = len(prompts) * args.new_tokens
        report(
            "generate_batch",
            times["baseline"] / times["batched"],
            prompts=len(prompts),
            device=args.device,
            baseline_tokens_per_s=tokens / times["baseline"],
            batched_tokens_per_s=tokens / times["batched"],
        )


if __name__ == "__main__":
    main()
