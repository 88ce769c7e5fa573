"""ROUGE-L diversity selection: `knowlm instruct select`'s rouge step (prefix-filtered inverted
index + bit-parallel LCS) against the all-pairs loop self-instruct uses (every candidate compared
with every kept item by dynamic-programming LCS), on the same synthetic instructions. Both must
keep exactly the same items; ratio = all-pairs time / our time.

    .venv/bin/python bench/bench_instruct_rouge.py [--n 3000] [--big 50000]
"""

from __future__ import annotations

import argparse
import time

from _harness import peak_rss_mb, report
from bench_instruct_dedup import make_items


def all_pairs(token_lists, threshold):
    from knowlm.instruct.text import lcs_length_dp

    kept, decisions = [], []
    for tokens in token_lists:
        novel = all(not tokens or not other or 2 * lcs_length_dp(tokens, other) / (len(tokens) + len(other)) < threshold for other in kept)
        decisions.append(novel)
        if novel:
            kept.append(tokens)
    return decisions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--big", type=int, default=50000)
    args = parser.parse_args()
    from knowlm.instruct.selectors import RougeSelector, SelectContext
    from knowlm.instruct.text import tokenize

    records, _, _ = make_items(args.n, seed=1)
    for r in records:  # instruction plus the first words of the answer: 10-25 tokens, like real prompts
        r["instruction"] = r["instruction"] + " " + " ".join(r["output"].split()[:10])
    selector = RougeSelector(field="instruction")
    start = time.perf_counter()
    ours = [d.keep for d in selector.decide(records, SelectContext())]
    ours_time = time.perf_counter() - start
    start = time.perf_counter()
    base = all_pairs([tokenize(r["instruction"]) for r in records], selector.threshold)
    base_time = time.perf_counter() - start
    assert ours == base, "index and all-pairs disagree"

    big, _, _ = make_items(args.big, seed=2)
    for r in big:
        r["instruction"] = r["instruction"] + " " + " ".join(r["output"].split()[:10])
    start = time.perf_counter()
    kept_big = sum(d.keep for d in selector.decide(big, SelectContext()))
    big_time = time.perf_counter() - start
    report(
        "instruct_rouge_speedup_vs_all_pairs",
        base_time / ours_time,
        items=args.n,
        kept=sum(ours),
        identical_decisions=True,
        ours_seconds=ours_time,
        all_pairs_seconds=base_time,
        big_items=args.big,
        big_kept=kept_big,
        big_ours_seconds=big_time,
        peak_rss_mb=peak_rss_mb(),
    )


if __name__ == "__main__":
    main()
