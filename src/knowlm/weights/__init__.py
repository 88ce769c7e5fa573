"""Weight tools that work on a laptop-sized amount of memory and prove their own results.

Streaming tensor I/O (:mod:`.checkpoint_reader`, :mod:`.checkpoint_writer`, :mod:`.tensor_io`), diff
make/recover with per-tensor checksums (:mod:`.diff`), LoRA merge (:mod:`.lora`), Meta -> Hugging Face conversion (:mod:`.meta`),
GGUF and MindSpore export, and hub download with checksum verification.
"""

from knowlm.weights.checkpoint_reader import Checkpoint
from knowlm.weights.checkpoint_writer import ShardedWriter
from knowlm.weights.diff import make_diff, recover
from knowlm.weights.download import download, parse_checksum_file, verify_checksums
from knowlm.weights.gguf_export import export_gguf
from knowlm.weights.lora import merge_lora
from knowlm.weights.meta import convert_meta
from knowlm.weights.mindspore_export import export_mindspore


def demo_stage(workdir, base_dir, adapter_dir, gguf_type: str = "q8_0") -> dict:
    """The demo's weights stage: merge the SFT adapter into the base, export the result to GGUF."""
    from knowlm.weights.demo import demo_stage as _demo_stage

    return _demo_stage(workdir, base_dir, adapter_dir, gguf_type=gguf_type)


__all__ = [
    "Checkpoint",
    "ShardedWriter",
    "make_diff",
    "recover",
    "merge_lora",
    "convert_meta",
    "export_gguf",
    "export_mindspore",
    "download",
    "verify_checksums",
    "parse_checksum_file",
    "demo_stage",
]
