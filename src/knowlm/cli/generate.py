"""`knowlm generate`: interactive chat or a batch of cases."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from knowlm.cli._common import OVERWRITE, console, decoding_from_flags, parse_floats
from knowlm.errors import KnowlmError
from knowlm.models.templates import DEFAULT_TEMPLATE, TEMPLATES


def generate(
    model: str = typer.Option(..., "--model", "-m", help="Local Hugging Face model directory or hub id."),
    adapter: Optional[str] = typer.Option(None, help="PEFT LoRA adapter directory to apply."),
    interactive: bool = typer.Option(False, "--interactive", "-i", help="Chat in the terminal (reads stdin)."),
    cases: Optional[Path] = typer.Option(None, help="JSONL of cases {id, instruction, input, system, parameters}."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to write case results (JSONL). Default: CASES.out.jsonl"),
    template: Optional[str] = typer.Option(None, help=f"Prompt template: {', '.join(TEMPLATES)}. Default: the adapter's or model's knowlm.json, else {DEFAULT_TEMPLATE}."),
    system: Optional[str] = typer.Option(None, help="System prompt (templates that have one)."),
    preset: str = typer.Option("default", help="Decoding preset: default, ie (deterministic), creative (sampling)."),
    max_new_tokens: Optional[int] = typer.Option(None, help="Most tokens to generate."),
    temperature: Optional[float] = typer.Option(None, help="Sampling temperature; 0 = greedy."),
    top_p: Optional[float] = typer.Option(None, help="Nucleus sampling mass."),
    top_k: Optional[int] = typer.Option(None, help="Top-k sampling; 0 = off."),
    num_beams: Optional[int] = typer.Option(None, help="Beam search width."),
    repetition_penalty: Optional[float] = typer.Option(None, help="Penalty for repeated tokens (1.0 = none)."),
    do_sample: Optional[bool] = typer.Option(None, "--do-sample/--greedy", help="Force sampling or greedy decoding."),
    batch_size: int = typer.Option(16, help="Cases decoded together."),
    dtype: str = typer.Option("auto", help="auto, float32, float16, bfloat16."),
    device: str = typer.Option("auto", help="auto, cpu, cuda."),
    load_8bit: bool = typer.Option(False, "--load-8bit", help="bitsandbytes 8-bit weights (CUDA)."),
    load_4bit: bool = typer.Option(False, "--load-4bit", help="bitsandbytes 4-bit NF4 weights (CUDA)."),
    allocate: Optional[str] = typer.Option(None, help="GiB per GPU for multi-GPU placement, e.g. 10,10,10."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Generate with a model: chat interactively or run a file of cases.

    In chat, change decoding while it runs: /set temperature 0.2, /set preset ie, /show, /reset, /quit.

    Example: knowlm generate -m demo-work/merged --cases examples/general_cases.jsonl -o demo-work/examples/answers.jsonl
    """
    from knowlm.infer import load_generator
    from knowlm.infer.cases import run_cases_file
    from knowlm.infer.chat import ChatSession, run_chat

    if interactive == (cases is not None):
        raise KnowlmError("choose exactly one of --interactive or --cases FILE")
    if load_8bit and load_4bit:
        raise KnowlmError("choose one of --load-8bit and --load-4bit")
    if cases is not None and not cases.is_file():
        raise KnowlmError(f"cases file not found: {cases}")
    if output is not None and cases is None:
        raise KnowlmError("--output is where --cases results go; chat (--interactive) writes nothing")
    if cases is not None:
        from knowlm.utils.outputs import check_output

        output = check_output(output or cases.with_suffix(".out.jsonl"), overwrite=overwrite, inputs=[cases, model, adapter])
    params = decoding_from_flags(preset, max_new_tokens, temperature, top_p, top_k, num_beams, repetition_penalty, do_sample)
    quantization = "8bit" if load_8bit else "4bit" if load_4bit else None
    generator = load_generator(
        model, adapter, template, dtype=dtype, device=device, quantization=quantization, allocate=parse_floats(allocate, "--allocate")
    )
    if interactive:
        run_chat(ChatSession(generator, params, system=system), sys.stdin, sys.stdout)
        return
    results = run_cases_file(generator, cases, output, params, batch_size)
    stopped = sum(r["finish_reason"] == "stop" for r in results)
    tokens = sum(r["num_tokens"] for r in results)
    console.print(
        f"Generated answers for {len(results)} cases ({tokens} tokens, {stopped} ended at EOS, "
        f"{len(results) - stopped} hit max_new_tokens) with template {generator.template!r}; wrote {output}."
    )


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
