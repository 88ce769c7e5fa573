"""Packing efficiency (real tokens / (samples x seq-len)) on the bundled corpus at seq-len 256.

Baseline: one sample per document truncated to seq-len (what a loader without packing does).
Ours: greedy sentence packing, per document (`--pack document`, DESIGN's default), across
consecutive documents (`--pack stream`) and best-fit bin packing of whole sentence-cut pieces
(`--pack best-fit`, what the demo uses). The ratio printed last is best-fit's. Target: >= 0.95.

    .venv/bin/python bench/bench_data_packing.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import report  # noqa: E402
from bench_data_throughput import tokenizer_for_bench  # noqa: E402


def main() -> None:
    import numpy as np

    from knowlm.data import PrepareConfig, prepare
    from knowlm.data.indexed import IndexedDataset
    from knowlm.resources import corpus_path

    seq_len = 256
    with tempfile.TemporaryDirectory(prefix="bench-data-pack-") as tmp:
        work = Path(tmp)
        tok = tokenizer_for_bench(work)
        results = {}
        for mode in ("document", "stream", "best-fit"):
            side = prepare(PrepareConfig(inputs=[str(corpus_path())], tokenizer=tok, output_prefix=str(work / mode),
                                         seq_len=seq_len, pack=mode, min_sample_tokens=1))
            results[mode] = side
        # Baseline: the same kept documents, one truncated sample each.
        doc_ds = IndexedDataset(work / "document")
        per_doc = np.array([sum(len(s) for s in doc_ds.document(j)) for j in range(doc_ds.num_documents)])
        baseline = float(np.minimum(per_doc, seq_len).sum() / (len(per_doc) * seq_len))
        truncated = int(np.maximum(per_doc - seq_len, 0).sum())  # what that baseline throws away
        c = results["document"]["counts"]
        report(
            "data_packing_efficiency",
            results["best-fit"]["packing_efficiency"],
            corpus_documents=c["lines"],
            kept_documents=c["documents"],
            tokens=c["tokens"],
            mean_document_tokens=float(per_doc.mean()),
            baseline_one_sample_per_document=baseline,
            baseline_tokens_lost_to_truncation=truncated,
            knowlm_pack_document=results["document"]["packing_efficiency"],
            knowlm_pack_document_samples=c["sequences"],
            knowlm_pack_stream=results["stream"]["packing_efficiency"],
            knowlm_pack_stream_samples=results["stream"]["counts"]["sequences"],
            knowlm_pack_best_fit=results["best-fit"]["packing_efficiency"],
            knowlm_pack_best_fit_samples=results["best-fit"]["counts"]["sequences"],
            knowlm_pack_best_fit_short_samples_dropped=results["best-fit"]["counts"]["short_samples_dropped"],
        )


if __name__ == "__main__":
    main()
