"""``knowlm instruct generate | select``: thin wrappers over :mod:`knowlm.instruct`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer

from knowlm.cli._common import ALLOW_EMPTY, OVERWRITE, console, err_console
from knowlm.errors import KnowlmError

instruct_app = typer.Typer(
    help="Instruction data: generate it (self-instruct, back-translation, KG2Instruction) and select it with a YAML pipeline.\n\n"
    "Example: knowlm instruct select --input demo-work/instructions.sample.jsonl --output demo-work/examples/selected.jsonl",
    no_args_is_help=True,
)


def _progress(description: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err_console, transient=True)
    task = bar.add_task(description, total=None)
    return bar, lambda done, total: bar.update(task, completed=done, total=total)


@instruct_app.command("generate")
def generate_cmd(
    method: str = typer.Option(..., "--method", help="self-instruct | backtranslation | kg2instruct."),
    seeds: Path = typer.Option(..., "--seeds", help="self-instruct: seed tasks JSONL; backtranslation: texts (JSONL or .txt); kg2instruct: the corpus."),
    output: Path = typer.Option(..., "--output", "-o", help="Alpaca JSONL with provenance fields (OUT.partial while running)."),
    api_base: Optional[str] = typer.Option(None, "--api-base", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8090/v1 (knowlm serve)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="KNOWLM_API_KEY", help="Bearer key for the endpoint."),
    api_model: Optional[str] = typer.Option(None, "--api-model", help="Model name at the endpoint (default: the first it lists)."),
    api_mode: str = typer.Option("chat", "--api-mode", help="chat (/v1/chat/completions, template applied) or completion (raw prompt)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Local model directory or hub id instead of an endpoint."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="LoRA adapter for the local model."),
    concurrency: int = typer.Option(4, "--concurrency", help="Parallel requests to the endpoint."),
    num_instructions: int = typer.Option(100, "--num-instructions", "-n", help="self-instruct: new records to generate."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Tokens per request (self-instruct 512, backtranslation 128)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling temperature (self-instruct 1.0, backtranslation 0.7)."),
    batch_size: int = typer.Option(16, "--batch-size", help="backtranslation: texts per resumable batch; local model: prompts per forward batch."),
    json_key: str = typer.Option("text", "--json-key", help="backtranslation: text field of the JSONL input."),
    kg: List[Path] = typer.Option([], "--kg", help="kg2instruct: knowledge graph JSONL (repeatable)."),
    schema: Optional[Path] = typer.Option(None, "--schema", help="kg2instruct: relation schema JSON."),
    split: List[str] = typer.Option(["train"], "--split", help="kg2instruct: which splits to write (train, dev, test; repeatable)."),
    overwrite: bool = OVERWRITE,
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
) -> None:
    """Generate instruction data with an LLM (endpoint or local model) or from a knowledge graph.

    Re-running the same command after an interruption resumes: finished rounds/batches are kept.

    Example: knowlm instruct generate --method kg2instruct --seeds src/knowlm/resources/corpus.jsonl --kg src/knowlm/resources/kg.jsonl --output demo-work/examples/kg_instructions.jsonl

    With `knowlm serve` running: knowlm instruct generate --method self-instruct --seeds demo-work/kg2instruct/dev.jsonl --output gen.jsonl --api-base http://127.0.0.1:8090/v1 -n 50
    """
    from knowlm.instruct import METHODS

    if method not in METHODS:
        raise KnowlmError(f"unknown --method {method!r}; choose one of: {', '.join(METHODS)}")
    from knowlm.utils.outputs import check_output

    if not seeds.is_file():
        raise KnowlmError(f"--seeds file not found: {seeds}")
    for path in kg:
        if not path.is_file():
            raise KnowlmError(f"--kg file not found: {path}")
    # An interrupted run resumes from OUTPUT.partial; a finished OUTPUT is replaced only with --overwrite.
    check_output(output, overwrite=overwrite, inputs=[seeds, *kg, schema, model, adapter])
    if method == "kg2instruct":
        from knowlm.instruct import kg_instructions

        if not kg:
            raise KnowlmError("--method kg2instruct needs --kg KG.jsonl")
        stats = kg_instructions([seeds], kg, output, schema_path=schema, splits=split)
        _summary(stats, f"KG2Instruction wrote {stats['records']} instructions from {stats['documents']} documents "
                        f"({stats['triples']} triples) to {output} in {stats['seconds']}s.")
        return

    from knowlm.instruct import BacktranslationConfig, SelfInstructConfig, backtranslate, make_llm, self_instruct

    llm = make_llm(api_base=api_base, model=model, api_key=api_key, api_model=api_model, mode=api_mode,
                   concurrency=concurrency, adapter=adapter, batch_size=batch_size)
    bar, update = _progress(method)
    with bar:
        if method == "self-instruct":
            config = SelfInstructConfig(num_instructions=num_instructions, seed=seed)
            config.max_tokens = max_tokens or config.max_tokens
            config.temperature = config.temperature if temperature is None else temperature
            stats = self_instruct(seeds, output, llm, config, progress=update)
        else:
            config = BacktranslationConfig(batch_size=batch_size, json_key=json_key, seed=seed)
            config.max_tokens = max_tokens or config.max_tokens
            config.temperature = config.temperature if temperature is None else temperature
            stats = backtranslate(seeds, output, llm, config, progress=update)
    requests = stats["requests"]
    text = (f"{method} wrote {stats['records']} records to {stats['output']} in {stats['seconds']}s; "
            f"{requests['requests']} requests, {requests['retries']} retried, {requests['failed']} failed; "
            f"dropped: {json.dumps(stats['dropped'], ensure_ascii=False)}; skipped input: {json.dumps(stats['skipped_input'])}.")
    _summary(stats, text)
    if stats.get("complete") is False:
        err_console.print("some batches failed: re-run the same command to retry them (finished batches are kept).")
        raise typer.Exit(1)


def _summary(stats: dict, text: str) -> None:
    console.print(text, soft_wrap=True)


@instruct_app.command("select")
def select_cmd(
    input: Path = typer.Option(..., "--input", "-i", help="Alpaca JSONL {instruction, input, output}."),
    output: Path = typer.Option(..., "--output", "-o", help="Kept records (every record, scored, with --dry-run)."),
    pipeline: Optional[Path] = typer.Option(None, "--pipeline", "-p", help="YAML list of {selector: length|dedup|rouge|perplexity|mtld|judge|language, ...params}; default: length, dedup, rouge, mtld, language."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Score every record and mark what would be dropped, drop nothing."),
    scores: bool = typer.Option(False, "--scores", help="Also write each step's score into kept records."),
    rejected: Optional[Path] = typer.Option(None, "--rejected", help="Write dropped records here, each with the step and reason."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the per-step report as JSON."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Local model for perplexity (and the judge without --api-base)."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="LoRA adapter for --model."),
    api_base: Optional[str] = typer.Option(None, "--api-base", help="OpenAI-compatible endpoint for the judge."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="KNOWLM_API_KEY", help="Bearer key for the endpoint."),
    api_model: Optional[str] = typer.Option(None, "--api-model", help="Model name at the endpoint."),
    overwrite: bool = OVERWRITE,
    allow_empty: bool = ALLOW_EMPTY,
) -> None:
    """Select instruction data: apply selectors in order and report what each dropped and why.

    Example: knowlm instruct select --input demo-work/instructions.sample.jsonl --output demo-work/examples/selected.jsonl --rejected demo-work/examples/dropped.jsonl
    """
    from rich.table import Table

    from knowlm.instruct import select
    from knowlm.instruct.selectors import SelectContext
    from knowlm.utils.atomic import atomic_write
    from knowlm.utils.outputs import check_outputs

    if not input.is_file():
        raise KnowlmError(f"input file not found: {input}")
    check_outputs([(output, "--output"), (rejected, "--rejected"), (report, "--report")], overwrite=overwrite,
                  inputs=[input, pipeline, model, adapter])
    context = SelectContext(model=model, adapter=adapter, api_base=api_base, api_key=api_key, api_model=api_model,
                            progress=err_console.is_terminal)
    summary = select(input, output, pipeline, dry_run=dry_run, scores=scores, rejected=rejected, context=context,
                     echo=lambda entry: err_console.print(f"  {entry['step']}: dropped {entry['dropped']} of {entry['input']}"),
                     allow_empty=allow_empty)
    table = Table("step", "in", "dropped", "kept", "reasons", "s", title="would drop (dry run)" if dry_run else "selection")
    for entry in summary["steps"]:
        table.add_row(entry["step"], str(entry["input"]), str(entry["dropped"]), str(entry["kept"]),
                      ", ".join(f"{k}: {v}" for k, v in entry["reasons"].items()) or "-", f"{entry['seconds']:.2f}")
    console.print(table)
    if report:
        with atomic_write(report) as handle:
            json.dump(summary, handle, ensure_ascii=False, indent=2)
    skipped = sum(summary["skipped_lines"].values())
    dropped = summary.get("dropped", summary.get("would_drop"))
    verb = "would drop" if dry_run else "dropped"
    console.print(f"Read {summary['read']} records from {input} ({skipped} bad lines skipped: {json.dumps(summary['skipped_lines'])}); "
                  f"{verb} {dropped} in {len(summary['steps'])} steps; wrote {summary['written']} to {output} in {summary['seconds']}s.",
                  soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(instruct_app, name="instruct")
