"""Serving throughput: 16 concurrent clients against `knowlm serve` with continuous batching,
and against the same server handling one request at a time (max_batch_size=1).

Both servers run the same tiny LLaMA (2 layers, hidden 64) on uvicorn over loopback; the
clients post OpenAI /v1/completions (greedy, 64 new tokens) and count usage.completion_tokens.
Prints generated tokens/s and p50/p99 latency for each, then `serve_throughput: <ratio>`.

Run: .venv/bin/python bench/bench_serve_throughput.py [--clients 16] [--requests-per-client 4] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPTS = ["浙江大学位于", "The knowledge graph links", "杭州是", "Apple Inc. was founded by", "知识抽取的任务是", "Tim Cook is the"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def run_clients(url: str, clients: int, per_client: int, max_tokens: int) -> dict:
    import httpx

    latencies: list[float] = []
    tokens = errors = 0

    async def client(index: int, http: httpx.AsyncClient):
        nonlocal tokens, errors
        for j in range(per_client):
            body = {"prompt": PROMPTS[(index + j) % len(PROMPTS)] + f" {index}-{j}", "max_tokens": max_tokens, "temperature": 0}
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


def serve_and_measure(model, tokenizer, model_dir: str, max_batch_size: int, args) -> dict:
    from knowlm.infer.batching import BatchingEngine, EngineConfig
    from knowlm.serve import BackgroundServer, ServeLimits, Service, create_app

    engine = BatchingEngine(model, tokenizer, EngineConfig(max_batch_size=max_batch_size, max_waiting=4096, num_threads=args.threads))
    service = Service.from_engine(engine, model_dir, limits=ServeLimits(max_tokens=args.max_tokens))
    with BackgroundServer(create_app(service, graceful_timeout=5)) as url:
        asyncio.run(run_clients(url, 2, 1, 4))  # warm-up
        result = asyncio.run(run_clients(url, args.clients, args.requests_per_client, args.max_tokens))
        result["decode_passes"] = engine.decode_passes
        result["mean_batch"] = sum(s * n for s, n in engine.batch_histogram.items()) / max(1, engine.decode_passes)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="engine threads (same for both runs)")
    parser.add_argument("--model", default=None, help="model directory (default: a fresh tiny LLaMA)")
    args = parser.parse_args()

    from knowlm.models import load
    from knowlm.models.tiny import make_tiny

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or str(make_tiny(Path(tmp) / "tiny"))
        model, tokenizer = load(model_dir)
        batched = serve_and_measure(model, tokenizer, model_dir, 16, args)
        single = serve_and_measure(model, tokenizer, model_dir, 1, args)
    for name, r in (("continuous batching (max_batch_size=16)", batched), ("one at a time (max_batch_size=1)", single)):
        print(f"{name}: {r['tokens']} tokens in {r['wall_s']:.2f} s = {r['tok_s']:.1f} tok/s; "
              f"latency p50 {r['p50_s'] * 1000:.0f} ms, p99 {r['p99_s'] * 1000:.0f} ms; "
              f"{r['requests']} requests, {r['errors']} errors; mean decode batch {r['mean_batch']:.1f}")
    print(f"clients={args.clients} requests/client={args.requests_per_client} max_tokens={args.max_tokens} threads={args.threads}")
    print(f"serve_throughput: {batched['tok_s'] / single['tok_s']:.2f}")


if __name__ == "__main__":
    main()
