"""Peak RSS of `knowlm data prepare` when the corpus grows tenfold (target: < 100 MB growth).

Runs the real CLI in a subprocess per corpus size and samples the resident memory of the
whole process tree (parent + tokenization workers) every 50 ms. Baseline = the small corpus.

    .venv/bin/python bench/bench_data_memory.py [--mb 10] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import report  # noqa: E402
from bench_data_throughput import tokenizer_for_bench, write_corpus  # noqa: E402


def tree_rss_mb(pid: int) -> tuple[float, float]:
    """(parent RSS, parent + children PSS) in MB: PSS splits pages shared after fork between
    the processes instead of counting them once per worker as RSS does."""
    import psutil

    try:
        proc = psutil.Process(pid)
        parent = proc.memory_info().rss
        total = sum(p.memory_full_info().pss for p in [proc, *proc.children(recursive=True)])
    except psutil.Error:
        return 0.0, 0.0
    return parent / 2**20, total / 2**20


def run(corpus: Path, tok: str, prefix: Path, workers: int) -> tuple[float, float, float]:
    cmd = [sys.executable, "-m", "knowlm", "data", "prepare", "--input", str(corpus), "--tokenizer", tok,
           "--output-prefix", str(prefix), "--workers", str(workers), "--seq-len", "1024"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_parent = peak_tree = 0.0
    while proc.poll() is None:
        parent, tree = tree_rss_mb(proc.pid)
        peak_parent, peak_tree = max(peak_parent, parent), max(peak_tree, tree)
        time.sleep(0.05)
    if proc.returncode:
        raise SystemExit(proc.stderr.read().decode())
    return peak_parent, peak_tree, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=10)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-data-mem-") as tmp:
        work = Path(tmp)
        tok = tokenizer_for_bench(work)
        small, large = work / "small.jsonl", work / "large.jsonl"
        write_corpus(small, args.mb)
        write_corpus(large, 10 * args.mb)
        p1, t1, s1 = run(small, tok, work / "small", args.workers)
        p10, t10, s10 = run(large, tok, work / "large", args.workers)
        report(
            "data_memory_growth_ratio",
            t10 / t1,
            corpus_small_mb=small.stat().st_size / 1e6,
            corpus_large_mb=large.stat().st_size / 1e6,
            peak_rss_parent_small_mb=p1,
            peak_rss_parent_large_mb=p10,
            peak_pss_tree_small_mb=t1,
            peak_pss_tree_large_mb=t10,
            peak_pss_tree_growth_mb=t10 - t1,
            seconds_small=s1,
            seconds_large=s10,
        )


if __name__ == "__main__":
    main()
