"""Load: 1,000 requests at concurrency 32 over loopback against `knowlm serve`; every request
must get a 200 with a well-formed answer (no errors, nothing lost). Mixed routes: KnowLM
/generate, OpenAI chat (half of them streamed) and completions. Bounded: per-request timeout,
and the run stops after the 1,000th answer.

Baseline for the ratio: the same requests sent one at a time (first 64 only, to stay short);
the last line is `serve_load: <requests/s under load ÷ requests/s sequential>`.

Run: .venv/bin/python bench/bench_serve_load.py [--requests 1000] [--concurrency 32]
GPU: .venv/bin/python bench/bench_serve_load.py --device cuda --dtype bfloat16 [--model DIR] [--compile]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_request(i: int) -> tuple[str, dict]:
    kind = i % 4
    if kind == 0:
        return "/generate", {"instruction": f"介绍 {i}", "parameters": {"max_tokens": 16}}
    if kind == 1:
        return "/v1/completions", {"prompt": f"Request {i}:", "max_tokens": 16, "temperature": 0.7, "seed": i}
    return "/v1/chat/completions", {"messages": [{"role": "user", "content": f"hello {i}"}], "max_tokens": 16, "stream": kind == 3}


def check(path: str, body: dict, status: int, text: str) -> bool:
    if status != 200:
        return False
    if body.get("stream"):
        lines = [l[6:] for l in text.splitlines() if l.startswith("data: ")]
        return bool(lines) and lines[-1] == "[DONE]" and all("error" not in json.loads(l) for l in lines[:-1])
    data = json.loads(text)
    if path == "/generate":
        return data["error"] is None and isinstance(data["generated_text"], str)
    return data["choices"] and data["usage"]["completion_tokens"] >= 1


async def run(url: str, indices: list[int], concurrency: int) -> dict:
    import httpx

    queue: asyncio.Queue = asyncio.Queue()
    for i in indices:
        queue.put_nowait(i)
    answered: dict[int, bool] = {}
    latencies: list[float] = []

    async def worker(http):
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            path, body = make_request(i)
            started = time.perf_counter()
            try:
                reply = await http.post(f"{url}{path}", json=body)
                answered[i] = check(path, body, reply.status_code, reply.text)
            except httpx.HTTPError:
                answered[i] = False
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ok = sum(answered.values())
    return {"sent": len(indices), "answered": len(answered), "ok": ok, "errors": len(answered) - ok,
            "lost": len(indices) - len(answered), "wall_s": wall, "rps": len(indices) / wall,
            "p50_s": statistics.median(latencies), "p99_s": sorted(latencies)[int(0.99 * (len(latencies) - 1))]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=None, help="model directory (default: a fresh tiny LLaMA)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    parser.add_argument("--compile", action="store_true", help="engine with static KV cache slots (CUDA-graph decode on a GPU)")
    args = parser.parse_args()

    from knowlm.infer.batching import BatchingEngine, EngineConfig
    from knowlm.models import load
    from knowlm.models.tiny import make_tiny
    from knowlm.serve import BackgroundServer, Service, create_app

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or str(make_tiny(Path(tmp) / "tiny"))
        model, tokenizer = load(model_dir, dtype=args.dtype, device=args.device)
        engine = BatchingEngine(model, tokenizer, EngineConfig(max_batch_size=16, max_waiting=256, num_threads=args.threads, compile=args.compile))
        with BackgroundServer(create_app(Service.from_engine(engine, model_dir), graceful_timeout=10)) as url:
            sequential = asyncio.run(run(url, list(range(64)), 1))
            loaded = asyncio.run(run(url, list(range(args.requests)), args.concurrency))
            mean_batch = sum(s * n for s, n in engine.batch_histogram.items()) / max(1, engine.decode_passes)
    for name, r in ((f"load ({args.requests} requests, concurrency {args.concurrency})", loaded), ("sequential (64 requests)", sequential)):
        print(f"{name}: {r['ok']}/{r['sent']} ok, {r['errors']} errors, {r['lost']} lost; {r['wall_s']:.1f} s = {r['rps']:.1f} req/s; "
              f"latency p50 {r['p50_s'] * 1000:.0f} ms, p99 {r['p99_s'] * 1000:.0f} ms")
    print(f"mean decode batch over the run: {mean_batch:.1f}")
    if loaded["errors"] or loaded["lost"]:
        raise SystemExit(f"FAILED: {loaded['errors']} errors, {loaded['lost']} lost")
    print(f"serve_load: {loaded['rps'] / sequential['rps']:.2f}")


if __name__ == "__main__":
    main()
