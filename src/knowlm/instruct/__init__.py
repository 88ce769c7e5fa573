"""Instruction data: generate it (self-instruct, back-translation, KG2Instruction) and select it
(length, dedup, ROUGE-L diversity, perplexity, MTLD, LLM judge, language) with YAML pipelines.

    self_instruct(seeds, output, llm, SelfInstructConfig())     -> stats   (resumable)
    backtranslate(texts, output, llm, BacktranslationConfig())  -> stats   (resumable)
    kg_instructions(corpus, kg, output, schema_path)            -> stats
    make_llm(api_base=... | model=...)                          -> an endpoint or local model
    select(input, output, pipeline_yaml, dry_run)               -> per-step report
    demo_stage(workdir, instructions_file)                      -> the demo's selection step
"""

from __future__ import annotations

from pathlib import Path

from knowlm.instruct.backtranslation import BacktranslationConfig, backtranslate
from knowlm.instruct.kg import kg_instructions
from knowlm.instruct.llm import EndpointLLM, LLMParams, LocalLLM, make_llm
from knowlm.instruct.mtld import mtld
from knowlm.instruct.pipeline import DEFAULT_PIPELINE, build_steps, load_pipeline, run_steps, select
from knowlm.instruct.rouge_index import RougeIndex
from knowlm.instruct.self_instruct import SelfInstructConfig, self_instruct
from knowlm.instruct.text import rouge_l, tokenize

METHODS = ("self-instruct", "backtranslation", "kg2instruct")


def demo_stage(workdir: str | Path, instructions_file: str | Path | None = None) -> dict:
    """The demo's instruction-selection step: the default pipeline (length, dedup, rouge, mtld,
    language) over an instruction file (default: the bundled SFT sample), with per-step counts."""
    from knowlm.resources import path as resource_path

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    source = Path(instructions_file) if instructions_file else resource_path("sft_sample.jsonl")
    summary = select(source, workdir / "instructions.selected.jsonl", DEFAULT_PIPELINE, rejected=workdir / "instructions.rejected.jsonl")
    return {
        "input": str(source), "read": summary["read"], "kept": summary["written"], "dropped": summary["dropped"],
        "per_step": {s["step"]: {"dropped": s["dropped"], "reasons": s["reasons"]} for s in summary["steps"]},
        "output": summary["output"], "seconds": summary["seconds"],
    }


__all__ = [
    "METHODS", "BacktranslationConfig", "backtranslate", "SelfInstructConfig", "self_instruct", "kg_instructions",
    "EndpointLLM", "LocalLLM", "LLMParams", "make_llm", "select", "build_steps", "load_pipeline", "run_steps",
    "DEFAULT_PIPELINE", "RougeIndex", "rouge_l", "tokenize", "mtld", "demo_stage",
]
