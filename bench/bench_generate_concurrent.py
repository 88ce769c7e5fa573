"""Concurrent greedy answers (issue 16's GPU target: 64 concurrent 128-token answers >= 3k tokens/s on a
1.1B LLaMA): the batched ``Generator`` (one ``generate`` call over all prompts), the serving
``BatchingEngine`` (all requests submitted at once), each with and without ``--compile`` (static KV cache;
torch.compile + CUDA graphs on a GPU), and vLLM's offline engine when it is installed (CUDA only).

Prints generated tokens/s for each, and for the engine its decode steps, wall milliseconds per step and
the engine thread's CPU milliseconds per step outside the model's forward pass (choosing tokens,
detokenizing, streaming, cache bookkeeping: the per-step overhead; CPU time, so other load on the
machine hardly moves it). Tokens are counted as generated (an early EOS shortens an answer);
vLLM runs with ``ignore_eos`` so it always writes ``--max-tokens``. Last line:
``generate_concurrent: <engine tokens/s / Generator tokens/s>``.

CPU:  .venv/bin/python bench/bench_generate_concurrent.py            (a fresh tiny LLaMA)
GPU:  .venv/bin/python bench/bench_generate_concurrent.py --model DIR --device cuda --dtype bfloat16 --compile --cache-len 512
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _harness import report

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def run_generator(model, tokenizer, prompts, args, compile: bool) -> dict:
    from knowlm.infer import DecodingParams, Generator

    generator = Generator(model, tokenizer, compile=compile)
    params = DecodingParams(max_new_tokens=args.max_tokens)
    generator.generate(prompts, params, batch_size=len(prompts))  # warm-up (and compilation)
    best = None
    for _ in range(args.rounds):
        sync(args.device)
        started = time.perf_counter()
        answers = generator.generate(prompts, params, batch_size=len(prompts))
        sync(args.device)
        wall = time.perf_counter() - started
        result = {"tokens": sum(a.num_tokens for a in answers), "wall_s": wall}
        if best is None or wall < best["wall_s"]:
            best = result
    return best


def run_engine(model, tokenizer, prompts, args, compile: bool) -> dict:
    from knowlm.infer.backends import GenerationRequest
    from knowlm.infer.batching import BatchingEngine, EngineConfig
    from knowlm.infer import DecodingParams

    engine = BatchingEngine(model, tokenizer, EngineConfig(max_batch_size=len(prompts), max_waiting=4 * len(prompts), num_threads=args.threads,
                                                           compile=compile, cache_len=args.cache_len if compile else None)).start()
    # CPU time of the engine thread in decode steps and in their forward passes: robust to other load on
    # the machine, and on a GPU the forward's share is its launch overhead.
    clock = {"step": 0.0, "forward": 0.0}
    plain_step, plain_forward = engine._step, engine._forward_decode

    def timed_step():
        started = time.thread_time()
        plain_step()
        clock["step"] += time.thread_time() - started

    def timed_forward(*a, **k):
        started = time.thread_time()
        out = plain_forward(*a, **k)
        clock["forward"] += time.thread_time() - started
        return out

    engine._step, engine._forward_decode = timed_step, timed_forward
    params = DecodingParams(max_new_tokens=args.max_tokens)
    try:
        def once():
            handles = [engine.submit(GenerationRequest(p, params)) for p in prompts]
            return [h.result() for h in handles]

        once()  # warm-up (and compilation)
        best = None
        for _ in range(args.rounds):
            steps, clock["step"], clock["forward"] = engine.decode_passes, 0.0, 0.0
            started = time.perf_counter()
            answers = once()
            wall = time.perf_counter() - started
            steps = max(1, engine.decode_passes - steps)
            result = {"tokens": sum(a.num_tokens for a in answers), "wall_s": wall, "steps": steps, "ms_per_step": 1000 * wall / steps,
                      "overhead_ms_per_step": 1000 * (clock["step"] - clock["forward"]) / steps,
                      "forward_ms_per_step": 1000 * clock["forward"] / steps}
            if best is None or wall < best["wall_s"]:
                best = result
        return best
    finally:
        engine.stop(timeout=5)


def run_vllm(model_dir: str, prompts, args) -> dict | None:
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        return None
    llm = LLM(model=model_dir, dtype=args.dtype, seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    llm.generate(prompts, params, use_tqdm=False)
    best = None
    for _ in range(args.rounds):
        started = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        wall = time.perf_counter() - started
        result = {"tokens": sum(len(o.outputs[0].token_ids) for o in outputs), "wall_s": wall}
        if best is None or wall < best["wall_s"]:
            best = result
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="model directory (default: a fresh tiny LLaMA)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    parser.add_argument("--concurrent", type=int, default=64, help="prompts answered together")
    parser.add_argument("--max-tokens", type=int, default=128, help="new tokens per answer")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds after a warm-up; each figure is the best")
    parser.add_argument("--threads", type=int, default=1, help="CPU: torch threads")
    parser.add_argument("--compile", action="store_true", help="also measure --compile (static cache; CUDA graphs on a GPU)")
    parser.add_argument("--cache-len", type=int, default=None, help="engine --compile: tokens per KV slot (default: the model's context)")
    parser.add_argument("--no-vllm", action="store_true", help="skip vLLM even when installed")
    args = parser.parse_args()

    import torch

    from knowlm.models import load
    from knowlm.models.tiny import make_tiny
    from knowlm.resources import iter_corpus

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or str(make_tiny(Path(tmp) / "tiny"))
        model, tokenizer = load(model_dir, dtype=args.dtype, device=args.device)
        docs = [d["text"] for d in iter_corpus()]
        prompts = [f"{docs[i % len(docs)][:120]} ({i})" for i in range(args.concurrent)]
        runs: dict[str, dict] = {}
        for compile in (False, True) if args.compile else (False,):
            tag = " --compile" if compile else ""
            runs[f"Generator{tag}"] = run_generator(model, tokenizer, prompts, args, compile)
            runs[f"BatchingEngine{tag}"] = run_engine(model, tokenizer, prompts, args, compile)
        if args.device.startswith("cuda") and not args.no_vllm:
            del model
            torch.cuda.empty_cache()
            vllm = run_vllm(model_dir, prompts, args)
            if vllm is not None:
                runs["vLLM"] = vllm
    for label, r in runs.items():
        extra = ""
        if "steps" in r:
            extra = (f"; {r['steps']} decode steps, {r['ms_per_step']:.2f} ms/step, {r['overhead_ms_per_step']:.2f} CPU ms/step outside "
                     f"the forward pass ({r['forward_ms_per_step']:.2f} in it)")
        print(f"{label}: {r['tokens']} tokens in {r['wall_s']:.2f} s = {r['tokens'] / r['wall_s']:.1f} tok/s{extra}")
    engine, generator = runs["BatchingEngine"], runs["Generator"]
    report("generate_concurrent", (engine["tokens"] / engine["wall_s"]) / (generator["tokens"] / generator["wall_s"]),
           device=args.device, concurrent=args.concurrent, max_tokens=args.max_tokens)


if __name__ == "__main__":
    main()
