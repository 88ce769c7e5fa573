"""The corpus stage of ``knowlm demo``: prepare the bundled bilingual corpus."""

from __future__ import annotations

from pathlib import Path

from knowlm.data.pipeline import PrepareConfig, prepare


def demo_stage(workdir: str | Path, tokenizer_dir: str | Path, seq_len: int = 256, pack: str = "best-fit") -> dict:
    """Prepare ``knowlm.resources.corpus_path()`` into ``WORKDIR/corpus/bundled`` (.bin/.idx/.json).

    Packs with best-fit by default: the bundled documents are shorter than or close to 256 tokens,
    so per-document packing would leave a third of every sample empty (see bench_data_packing.py).

    Returns a summary: the prefix, counts, drops by reason and packing efficiency.
    """
    from knowlm.resources import corpus_path

    prefix = Path(workdir) / "corpus" / "bundled"
    side = prepare(
        PrepareConfig(
            inputs=[str(corpus_path())],
            tokenizer=str(tokenizer_dir),
            output_prefix=str(prefix),
            seq_len=seq_len,
            pack=pack,
            workers=1,
        )
    )
    return {
        "prefix": str(prefix),
        "documents": side["counts"]["documents"],
        "sequences": side["counts"]["sequences"],
        "tokens": side["counts"]["tokens"],
        "dropped": side["dropped"],
        "seq_len": seq_len,
        "pack": pack,
        "packing_efficiency": side["packing_efficiency"],
    }
