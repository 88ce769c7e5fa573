"""Peak memory of one training step per method, on a fixed bf16 LLaMA (the way released checkpoints ship).

Model: hidden 768, 6 layers, FFN 2048, 12 heads, vocabulary 32,000 (~92M parameters, 183 MB in
bf16), written once in a temporary directory; data: 64 alpaca records of ~200 tokens, cutoff
256, micro-batch 4, 3 optimizer steps of the real ``knowlm.train.sft`` recipe. Each method runs
in its own child process; its peak RSS (CPU; ``--device cuda``: ``torch.cuda.max_memory_allocated``)
is reported above the process's resident size after imports (the same ~0.5 GB of libraries for all).

``lora-before`` reproduces what training did before this change on the same bf16 base: the base
upcast to fp32 and full-vocabulary fp32 logits (``--precision fp32 --loss-chunk-size 0``).
``--before-src DIR`` runs it from another checkout's ``src`` instead (e.g. the previous commit).
The last line is ``bench_train_memory: peak(lora on a bf16 base) / peak(lora-before)`` -- lower is
better; the target is <= 0.55.

Run: .venv/bin/python bench/bench_train_memory.py [--device cuda] [--before-src ../old/src]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
SHAPE = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=6, num_attention_heads=12,
             num_key_value_heads=12, vocab_size=32000, max_position_embeddings=1024)
METHODS = {
    "lora-before": dict(method="lora", precision="fp32", loss_chunk_size=0),
    "lora-fp32": dict(method="lora", precision="fp32"),
    "lora-bf16": dict(method="lora", precision="bf16"),
    "lora-bf16-pure": dict(method="lora", precision="bf16-pure"),
    "full-fp32": dict(method="full", precision="fp32"),
    "full-bf16-mixed": dict(method="full", precision="bf16"),
    "full-bf16-pure": dict(method="full", precision="bf16-pure"),
    "qlora": dict(method="qlora", precision="bf16"),  # CUDA + bitsandbytes only
}


def build(work: Path) -> tuple[Path, Path]:
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from knowlm.models.tiny import build_tokenizer

    tok = build_tokenizer(work / "tok")
    model_dir = work / "model"
    torch.manual_seed(0)
    config = LlamaConfig(**SHAPE, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(str(model_dir))
    for item in tok.iterdir():
        if item.is_file():
            shutil.copy2(item, model_dir / item.name)
    words = "the river city university was founded in born located flows through capital of Hangzhou Zhejiang".split()
    import random

    rng = random.Random(0)
    data = work / "sft.jsonl"
    data.write_text("".join(json.dumps({"instruction": "Continue the text.", "input": " ".join(rng.choices(words, k=20)),
                                        "output": " ".join(rng.choices(words, k=150))}) + "\n" for _ in range(64)),
                    encoding="utf-8")
    return model_dir, data


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(method: str, model_dir: str, data: str, out: str, device: str) -> None:
    import dataclasses

    import peft  # noqa: F401 - libraries in the baseline, not in the training peak
    import torch
    import transformers  # noqa: F401

    from knowlm.train import SFTConfig, sft

    torch.set_num_threads(max(1, os.cpu_count() // 2))
    fields = {f.name for f in dataclasses.fields(SFTConfig)}
    settings = {k: v for k, v in METHODS[method].items() if k in fields}  # an older checkout lacks new options
    cfg = SFTConfig(model=model_dir, data=[data], output=out, micro_batch_size=4, max_steps=3, cutoff_len=256,
                    logging_steps=1, strategy="single", learning_rate=1e-4, **settings)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = rss_mb()
    summary = sft(cfg, quiet=True)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    print(json.dumps({"method": method, "baseline_rss_mb": before, "cuda_peak_mb": peak,
                      "final_loss": summary["final_loss"], "tokens": summary["tokens"]}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--methods", default="lora-before,lora-fp32,lora-bf16,lora-bf16-pure,full-fp32,full-bf16-mixed,full-bf16-pure")
    parser.add_argument("--before-src", default=None, help="checkout src/ to run lora-before from (default: this one)")
    parser.add_argument("--worker", default=None)
    parser.add_argument("--model"), parser.add_argument("--data"), parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.model, args.data, args.out, args.device)

    sys.path.insert(0, str(ROOT / "src"))
    methods = [m for m in args.methods.split(",") if m]
    if args.device == "cuda" and "qlora" not in methods:
        methods.append("qlora")
    with tempfile.TemporaryDirectory(prefix="bench-train-mem-") as tmp:
        work = Path(tmp)
        model_dir, data = build(work)
        rows = []
        for method in methods:
            src = Path(args.before_src) if method == "lora-before" and args.before_src else ROOT / "src"
            result = _measured(method, model_dir, data, work, args.device, src)
            rows.append(result)
            print(json.dumps(result), flush=True)
    ok = {r["method"]: r for r in rows if "error" not in r}
    key = "cuda_peak_mb" if args.device == "cuda" else "train_peak_mb"
    print(f"{'method':18s} {'peak MB':>10s}")
    for r in rows:
        print(f"{r['method']:18s} {r.get(key, float('nan')):10.1f}" + (f"  ({r['error']})" if "error" in r else ""))
    if "lora-bf16" in ok and "lora-before" in ok:
        print(f"bench_train_memory: {ok['lora-bf16'][key] / ok['lora-before'][key]:.2f}")


def _measured(method: str, model_dir: Path, data: Path, work: Path, device: str, src: Path) -> dict:
    """Run one method in a child; its kernel-reported peak RSS minus its RSS after imports."""
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, __file__, "--worker", method, "--model", str(model_dir), "--data", str(data),
           "--out", str(work / f"out-{method}"), "--device", device]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stdout = proc.stdout.read()
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        return {"method": method, "error": (stderr.strip().splitlines() or ["failed"])[-1][:200]}
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    result["train_peak_mb"] = result["peak_rss_mb"] - result["baseline_rss_mb"]
    return result


if __name__ == "__main__":
    main()
