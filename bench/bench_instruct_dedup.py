"""Near-duplicate removal of instruction records at scale: `knowlm instruct select`'s dedup step
(exact hash + MinHash LSH, confirmed on signatures) against the all-pairs baseline (exact Jaccard
of the same word shingles between every pair), on synthetic instructions with planted duplicates.

The baseline is quadratic, so it is timed on a sample and extrapolated to the full size (the
printed `baseline_*` figures say so). Ratio = extrapolated all-pairs time / our time, at N items.

    .venv/bin/python bench/bench_instruct_dedup.py [--n 100000] [--baseline-n 1500]
"""

from __future__ import annotations

import argparse
import random
import time

from _harness import peak_rss_mb, report

WORDS = [w.strip(",.") for w in (
    "explain describe list write summarize translate compare classify extract name give suggest find create rewrite "
    "analyse outline plan evaluate the a of to and in for on with about from into how why what which when where who "
    "city river university history science law music poem story recipe email letter report essay table argument "
    "reason example method process problem solution benefit risk cost price market product customer policy health "
    "water energy climate animal plant food sport travel school student teacher company government country language "
    "sentence paragraph word number date person event idea theory model data result study review article book film "
    "杭州 浙江 大学 历史 科学 城市 河流 文章 句子 翻译 总结 解释 比较 分类 提取 写 一 首 诗 关于 的 和 在 是"
).split()]


def make_items(n: int, seed: int = 0) -> tuple[list[dict], set[int], set[int]]:
    """N records: ~80% unique, 10% near duplicates (one word changed/added/removed) and 10% exact
    copies (case and spacing changed) of earlier records. Returns (records, near ids, exact ids)."""
    rng = random.Random(seed)
    records, near, exact = [], set(), set()
    for i in range(n):
        roll = rng.random()
        if records and roll < 0.1:
            source = records[rng.randrange(len(records))]
            words = source["output"].split()
            j = rng.randrange(len(words))
            op = rng.random()
            if op < 0.34:
                words[j] = rng.choice(WORDS)
            elif op < 0.67:
                words.insert(j, rng.choice(WORDS))
            else:
                del words[j]
            records.append({"instruction": source["instruction"], "input": "", "output": " ".join(words)})
            near.add(i)
        elif records and roll < 0.2:
            source = records[rng.randrange(len(records))]
            records.append({"instruction": source["instruction"].upper(), "input": "", "output": "  ".join(source["output"].split())})
            exact.add(i)
        else:
            instruction = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12)))
            output = " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 60)))
            records.append({"instruction": instruction, "input": "", "output": output})
    return records, near, exact


def all_pairs(records: list[dict], threshold: float, shingle: int) -> list[bool]:
    """Baseline: keep an item unless its exact shingle Jaccard to a kept item reaches the threshold."""
    from knowlm.data.dedup import _shingles
    from knowlm.instruct.text import record_text

    kept: list[set] = []
    decisions = []
    for record in records:
        s = _shingles(record_text(record), shingle)
        dup = any(len(s & k) / len(s | k) >= threshold for k in kept)
        decisions.append(not dup)
        if not dup:
            kept.append(s)
    return decisions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--baseline-n", type=int, default=1500)
    args = parser.parse_args()

    from knowlm.instruct.selectors import DedupSelector, SelectContext

    records, near, exact = make_items(args.n)
    selector = DedupSelector()
    import datasketch  # noqa: F401  - import cost (~1-3 s, scipy) is not part of the measurement

    start = time.perf_counter()
    decisions = selector.decide(records, SelectContext())
    ours = time.perf_counter() - start
    dropped = {i for i, d in enumerate(decisions) if not d.keep}
    exact_found = sum(1 for i in exact if decisions[i].reason == "exact_duplicate")
    near_found = len(near & dropped)

    sample = records[: args.baseline_n]
    start = time.perf_counter()
    base_decisions = all_pairs(sample, selector.threshold, selector.shingle)
    base_time = time.perf_counter() - start
    extrapolated = base_time * (args.n / args.baseline_n) ** 2
    ours_sample = [d.keep for d in selector.decide(sample, SelectContext())]
    agree = sum(a == b for a, b in zip(ours_sample, base_decisions)) / len(sample)

    report(
        "instruct_dedup_speedup_vs_all_pairs",
        extrapolated / ours,
        items=args.n,
        ours_seconds=ours,
        ours_items_per_second=args.n / ours,
        exact_dups_planted=len(exact),
        exact_dups_found=exact_found,
        near_dups_planted=len(near),
        near_dups_found=near_found,
        near_dup_recall=near_found / max(1, len(near)),
        dropped_total=len(dropped),
        baseline_sample=args.baseline_n,
        baseline_sample_seconds=base_time,
        baseline_extrapolated_seconds=extrapolated,
        decisions_agreeing_with_all_pairs_on_sample=agree,
        peak_rss_mb=peak_rss_mb(),
    )


if __name__ == "__main__":
    main()
