"""Corpus pipeline for continued pretraining.

clean + filter -> de-duplicate -> sentence split -> tokenize (parallel workers) -> greedy
packing -> Megatron-compatible memory-mapped dataset (``PREFIX.bin/.idx`` + ``PREFIX.json``).
"""

from knowlm.data.clean import FilterConfig, clean_text, quality_reason
from knowlm.data.dedup import DedupConfig
from knowlm.data.demo import demo_stage
from knowlm.data.indexed import IndexedDataset, IndexedDatasetWriter, merge, read_sidecar
from knowlm.data.inspect import inspect
from knowlm.data.packing import pack_lengths
from knowlm.data.pipeline import PrepareConfig, prepare
from knowlm.data.sentences import detect_lang, split_sentences

__all__ = [
    "split_sentences",
    "detect_lang",
    "clean_text",
    "quality_reason",
    "FilterConfig",
    "DedupConfig",
    "PrepareConfig",
    "prepare",
    "pack_lengths",
    "IndexedDataset",
    "IndexedDatasetWriter",
    "merge",
    "read_sidecar",
    "inspect",
    "demo_stage",
]
