"""Serving throughput: 16 concurrent clients against `knowlm serve` with continuous batching,
and against the same server handling one request at a time (max_batch_size=1); then the same
clients with a LoRA adapter: all requests for adapter `ie`, and alternating `ie` / the base model
(multi-LoRA traffic, which must keep sharing forward passes).

Every server runs the same tiny LLaMA (2 layers, hidden 64) on uvicorn over loopback; the
clients post OpenAI /v1/completions (greedy, 64 new tokens) and count usage.completion_tokens.
Prints generated tokens/s, p50/p99 latency and mean decode batch for each, then
`serve_adapter_throughput: <adapter batched / adapter one at a time>`, `serve_throughput: <batched / one at
a time>` and `serve_mixed_adapters: <alternating / single adapter>`.

Run: .venv/bin/python bench/bench_serve_throughput.py [--clients 16] [--requests-per-client 4] [--max-tokens 64] [--rounds 3]
GPU: .venv/bin/python bench/bench_serve_throughput.py --device cuda --dtype bfloat16 --model DIR --clients 64 --max-batch-size 64 [--compile]
(--compile: the base-model engines use static KV cache slots and a CUDA-graph decode step; adapter engines cannot)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPTS = ["浙江大学位于", "The knowledge graph links", "杭州是", "Apple Inc. was founded by", "知识抽取的任务是", "Tim Cook is the"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def run_clients(url: str, clients: int, per_client: int, max_tokens: int, models: tuple = (None,)) -> dict:
    import httpx

    latencies: list[float] = []
    tokens = errors = 0

    async def client(index: int, http: httpx.AsyncClient):
        nonlocal tokens, errors
        for j in range(per_client):
            body = {"prompt": PROMPTS[(index + j) % len(PROMPTS)] + f" {index}-{j}", "max_tokens": max_tokens, "temperature": 0,
                    "model": models[(index + j) % len(models)]}
            started = time.perf_counter()
            reply = await http.post(f"{url}/v1/completions", json=body)
            latencies.append(time.perf_counter() - started)
            if reply.status_code != 200:
                errors += 1
                continue
            tokens += reply.json()["usage"]["completion_tokens"]

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        wall = time.perf_counter() - started
    return {"wall_s": wall, "tokens": tokens, "errors": errors, "tok_s": tokens / wall,
            "p50_s": statistics.median(latencies), "p99_s": percentile(latencies, 0.99), "requests": len(latencies)}


def measure(url: str, engine, args, models: tuple = (None,)) -> dict:
    """One round of the clients against a running server, with the engine's mean decode batch."""
    before_passes, before_rows = engine.decode_passes, sum(s * n for s, n in engine.batch_histogram.items())
    result = asyncio.run(run_clients(url, args.clients, args.requests_per_client, args.max_tokens, models))
    passes = engine.decode_passes - before_passes
    result["mean_batch"] = (sum(s * n for s, n in engine.batch_histogram.items()) - before_rows) / max(1, passes)
    return result


def make_adapter(model_dir: str, out: Path) -> str:
    """A random LoRA adapter (q/v projections, rank 8) for the benchmark model."""
    import torch
    from peft import LoraConfig, get_peft_model

    from knowlm.models import load

    base, _ = load(model_dir)
    torch.manual_seed(0)
    get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).save_pretrained(str(out))
    return str(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="engine threads (same for every run)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each configuration reports its best")
    parser.add_argument("--model", default=None, help="model directory (default: a fresh tiny LLaMA)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    parser.add_argument("--compile", action="store_true", help="base-model engines with --compile")
    parser.add_argument("--max-batch-size", type=int, default=16, help="rows of the batching engines (match --clients on a GPU)")
    args = parser.parse_args()

    from knowlm.infer.batching import BatchingEngine, EngineConfig
    from knowlm.models import load
    from knowlm.models.tiny import make_tiny
    from knowlm.serve import BackgroundServer, ServeLimits, Service, create_app

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or str(make_tiny(Path(tmp) / "tiny"))
        model, tokenizer = load(model_dir, dtype=args.dtype, device=args.device)

        def plain(batch: int):
            return BatchingEngine(model, tokenizer, EngineConfig(max_batch_size=batch, max_waiting=4096, num_threads=args.threads, compile=args.compile))

        adapters = {"ie": make_adapter(model_dir, Path(tmp) / "ie")}

        def with_adapter(batch: int = args.max_batch_size):
            return BatchingEngine.from_pretrained(model_dir, adapters=adapters, dtype=args.dtype, device=args.device, max_batch_size=batch,
                                                  max_waiting=4096, num_threads=args.threads)

        name = Path(model_dir.rstrip("/")).name
        configs = {  # label -> (engine, model names the clients alternate over)
            f"continuous batching (max_batch_size={args.max_batch_size})": (plain(args.max_batch_size), (None,)),
            "one at a time (max_batch_size=1)": (plain(1), (None,)),
            f"adapter ie only (max_batch_size={args.max_batch_size})": (with_adapter(), ("ie",)),
            "adapter ie only, one at a time (max_batch_size=1)": (with_adapter(1), ("ie",)),
            f"alternating ie / base model (max_batch_size={args.max_batch_size})": (with_adapter(), ("ie", name)),
        }
        runs: dict[str, dict] = {}
        with ExitStack() as stack:
            urls = {}
            for label, (engine, models) in configs.items():
                service = Service.from_engine(engine, model_dir, limits=ServeLimits(max_tokens=args.max_tokens))
                urls[label] = stack.enter_context(BackgroundServer(create_app(service, graceful_timeout=5)))
                asyncio.run(run_clients(urls[label], 2, 1, 4, models))  # warm-up
            # Rounds interleave the configurations, and each keeps its best round: on a shared machine
            # other jobs' load comes and goes, and the best round is the one it disturbed least.
            for _ in range(args.rounds):
                for label, (engine, models) in configs.items():
                    result = measure(urls[label], engine, args, models)
                    if label not in runs or result["tok_s"] > runs[label]["tok_s"]:
                        runs[label] = result
    for label, r in runs.items():
        print(f"{label}: {r['tokens']} tokens in {r['wall_s']:.2f} s = {r['tok_s']:.1f} tok/s; "
              f"latency p50 {r['p50_s'] * 1000:.0f} ms, p99 {r['p99_s'] * 1000:.0f} ms; "
              f"{r['requests']} requests, {r['errors']} errors; mean decode batch {r['mean_batch']:.1f}")
    print(f"clients={args.clients} requests/client={args.requests_per_client} max_tokens={args.max_tokens} threads={args.threads} rounds={args.rounds} (best of) "
          f"device={args.device} dtype={args.dtype} compile={args.compile}")
    batched, single, adapter, adapter_single, mixed = runs.values()
    print(f"serve_adapter_throughput: {adapter['tok_s'] / adapter_single['tok_s']:.2f}")
    print(f"serve_throughput: {batched['tok_s'] / single['tok_s']:.2f}")
    print(f"serve_mixed_adapters: {mixed['tok_s'] / adapter['tok_s']:.2f}")


if __name__ == "__main__":
    main()
