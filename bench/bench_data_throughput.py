"""Tokens/s of `knowlm data prepare` against a KnowLM/Megatron-style baseline.

Baseline (as Megatron's tools/preprocess_data.py and KnowLM's preprocessing work): a
multiprocessing Pool maps an encoder over the input lines one document at a time
(``pool.imap(encode, lines, 32)``), each call ``json.loads`` + ``tokenizer(text)`` through the
Hugging Face tokenizer API, the id lists travel back to the parent, which writes them with
Megatron's own ``IndexedDatasetBuilder``. It does no cleaning, filtering, dedup, sentence
splitting or packing. Ours runs `knowlm data prepare`'s defaults (clean + 6 quality filters +
exact dedup + sentence split + greedy packing at seq-len 1024 + resumable chunk files + input
checksums). Same tokenizer (same directory, same ids), same corpus, same worker count; both
write uint16 .bin/.idx. Runs are interleaved and the fastest of each path counts; CPU seconds
(parent + workers) are printed too because wall time on a shared machine is noisy.

    .venv/bin/python bench/bench_data_throughput.py [--mb 50] [--workers 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import report  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ("marie curie studied physics paris river city university founded museum holds paintings books turing "
         "worked early computers capital old new famous science history music library garden bridge tower north "
         "south east west small large ancient modern professor student teacher writer painter mountain lake island "
         "empire dynasty emperor king queen war peace treaty council church temple palace poem novel theory "
         "experiment discovery prize award company factory railway harbour market festival season winter summer").split()
HANZI = ("浙江大学位于杭州长江流经上海居里夫人在巴黎学习物理图灵研究了早期的计算机博物馆收藏许多绘画和书籍西湖是著名景点"
         "历史文化中心城市建立年代山河湖海皇帝王朝战争和平条约会议寺庙宫殿诗歌小说理论实验发现奖项公司工厂铁路港口市场节日")


def make_document(rng: random.Random, doc_id: int) -> str:
    n = rng.choice((3, 5, 8, 12, 20, 40))
    if rng.random() < 0.5:
        sentences = []
        for _ in range(n):
            words = rng.choices(WORDS, k=rng.randint(6, 18))
            sentences.append(f"{words[0].capitalize()} {' '.join(words[1:])} in {rng.randint(1000, 2024)}.")
        return f"Record {doc_id}. " + " ".join(sentences)
    return f"第{doc_id}条。" + "".join("".join(rng.choices(HANZI, k=rng.randint(10, 30))) + "。" for _ in range(n))


def write_corpus(path: Path, megabytes: float, seed: int = 0, unique_block: int = 20000) -> int:
    """JSONL of synthetic zh/en documents. A block of ``unique_block`` random documents is
    written repeatedly with a new record number each time, so generating hundreds of MB is
    fast while every document stays distinct for exact dedup."""
    rng = random.Random(seed)
    block = [make_document(rng, 0) for _ in range(unique_block)]
    target = int(megabytes * 1e6)
    written = n = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            base = block[n % unique_block]
            text = base.replace("Record 0.", f"Record {n}.", 1).replace("第0条。", f"第{n}条。", 1)
            line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
            n += 1
    return n


class MegatronStyleEncoder:
    """What preprocess_data.py's Encoder does, with an HF tokenizer."""

    def __init__(self, tokenizer_dir: str):
        self.tokenizer_dir = tokenizer_dir

    def initializer(self) -> None:
        from transformers import AutoTokenizer

        MegatronStyleEncoder.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)

    def encode(self, line: str):
        text = json.loads(line)["text"]
        tok = MegatronStyleEncoder.tokenizer
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if ids:
            ids = [tok.bos_token_id] + ids + [tok.eos_token_id]  # --append-eod, plus BOS as LLaMA wants
        return ids, len(line)


def run_baseline(corpus: Path, tokenizer_dir: str, out_prefix: str, workers: int) -> int:
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    encoder = MegatronStyleEncoder(tokenizer_dir)
    tokens = 0
    with open(corpus, encoding="utf-8") as fin:
        with mp.get_context("fork").Pool(workers, initializer=encoder.initializer) as pool:
            builder = IndexedDatasetBuilder(f"{out_prefix}.bin", dtype=np.uint16)
            for ids, _ in pool.imap(encoder.encode, fin, 32):
                if ids:
                    builder.add_document(np.asarray(ids), [len(ids)])
                    tokens += len(ids)
            builder.finalize(f"{out_prefix}.idx")
    return tokens


def run_ours(corpus: Path, tokenizer_dir: str, out_prefix: str, workers: int, **kw) -> dict:
    from knowlm.data import PrepareConfig, prepare

    return prepare(PrepareConfig(inputs=[str(corpus)], tokenizer=tokenizer_dir, output_prefix=out_prefix,
                                 workers=workers, seq_len=1024, **kw))


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (the pool workers): a figure
    the other jobs on a shared machine disturb much less than wall-clock time."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def tokenizer_for_bench(work: Path) -> str:
    from knowlm.models.tiny import build_tokenizer

    return str(build_tokenizer(work / "tokenizer"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bare", action="store_true", help="also time ours with --no-filter --dedup none")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved runs of each path; the fastest counts")
    args = parser.parse_args()
    from knowlm.data import DedupConfig, FilterConfig

    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        work = Path(tmp)
        tok = tokenizer_for_bench(work)
        corpus = work / "corpus.jsonl"
        docs = write_corpus(corpus, args.mb)
        size_mb = corpus.stat().st_size / 1e6
        print(f"corpus: {size_mb:.1f} MB, {docs} documents; workers: {args.workers}; cpus: {os.cpu_count()}")

        # Interleaved runs (baseline, ours, baseline, ours, ...) and the fastest of each: other jobs on
        # a shared machine come and go, and this way both paths see the same conditions.
        base_runs, ours_runs = [], []
        for r in range(args.repeat):
            start, cpu0 = time.perf_counter(), cpu_seconds()
            base_tokens = run_baseline(corpus, tok, str(work / f"baseline{r}"), args.workers)
            base_runs.append((time.perf_counter() - start, cpu_seconds() - cpu0))
            start, cpu0 = time.perf_counter(), cpu_seconds()
            side = run_ours(corpus, tok, str(work / f"ours{r}"), args.workers)
            ours_runs.append((time.perf_counter() - start, cpu_seconds() - cpu0))
            ours_tokens = side["counts"]["tokens"]
            print(f"run {r}: baseline {base_runs[-1][0]:.1f} s ({base_runs[-1][1]:.1f} cpu-s), "
                  f"knowlm {ours_runs[-1][0]:.1f} s ({ours_runs[-1][1]:.1f} cpu-s)", flush=True)
        base_s, base_cpu = min(base_runs)
        ours_s, ours_cpu = min(ours_runs)
        base_tps, ours_tps = base_tokens / base_s, ours_tokens / ours_s
        extra = {}
        if args.bare:
            start = time.perf_counter()
            bare = run_ours(corpus, tok, str(work / "bare"), args.workers,
                            filter=FilterConfig(enabled=False), dedup=DedupConfig("none"))
            bare_s = time.perf_counter() - start
            extra = {"knowlm_nofilter_nodedup_seconds": bare_s,
                     "knowlm_nofilter_nodedup_tokens_per_s": bare["counts"]["tokens"] / bare_s,
                     "speedup_nofilter_nodedup": (bare["counts"]["tokens"] / bare_s) / base_tps}
        report(
            "data_throughput",
            ours_tps / base_tps,
            baseline_seconds=base_s,
            baseline_tokens=base_tokens,
            baseline_tokens_per_s=base_tps,
            baseline_cpu_seconds=base_cpu,
            knowlm_seconds=ours_s,
            knowlm_tokens=ours_tokens,
            knowlm_dropped=json.dumps(side["dropped"]),
            knowlm_tokens_per_s=ours_tps,
            knowlm_cpu_seconds=ours_cpu,
            cpu_ratio_baseline_over_knowlm=base_cpu / ours_cpu,
            knowlm_packing_efficiency=side["packing_efficiency"],
            **extra,
        )


if __name__ == "__main__":
    main()
