"""``knowlm data prepare | inspect | merge``: thin wrappers over :mod:`knowlm.data`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

import typer

from knowlm.cli._common import OVERWRITE, console, err_console

data_app = typer.Typer(
    help="Corpus pipeline: clean, filter, de-duplicate, pack and tokenize into a Megatron-compatible dataset.\n\n"
    "Example: knowlm data prepare --input src/knowlm/resources/corpus.jsonl --tokenizer demo-work/pretrain --output-prefix demo-work/examples/corpus",
    no_args_is_help=True,
)


@data_app.command("prepare")
def prepare_cmd(
    input: List[str] = typer.Option(..., "--input", "-i", help="JSONL / text file or glob (.gz too); repeat for several."),
    tokenizer: str = typer.Option(..., "--tokenizer", help="Hugging Face tokenizer directory or hub id."),
    output_prefix: str = typer.Option(..., "--output-prefix", "-o", help="Writes PREFIX.bin, PREFIX.idx, PREFIX.json."),
    seq_len: int = typer.Option(1024, "--seq-len", help="Maximum tokens per sample."),
    workers: int = typer.Option(1, "--workers", "-w", help="Tokenization processes."),
    json_key: str = typer.Option("text", "--json-key", help="Text field of JSONL records."),
    lang: str = typer.Option("auto", "--lang", help="Sentence splitting rules: auto (per document), zh or en."),
    dedup: str = typer.Option("exact", "--dedup", help="exact | minhash | none."),
    dedup_threshold: float = typer.Option(0.8, "--dedup-threshold", help="Jaccard similarity of near-duplicates (minhash)."),
    filter: bool = typer.Option(True, "--filter/--no-filter", help="Clean and quality-filter documents."),
    min_chars: int = typer.Option(20, "--min-chars", help="Filter: drop documents shorter than this."),
    max_symbol_ratio: float = typer.Option(0.3, "--max-symbol-ratio", help="Filter: max share of symbol characters."),
    max_digit_ratio: float = typer.Option(0.3, "--max-digit-ratio", help="Filter: max share of digits."),
    max_dup_line_ratio: float = typer.Option(0.3, "--max-dup-line-ratio", help="Filter: max share of repeated lines."),
    max_dup_ngram_ratio: float = typer.Option(0.5, "--max-dup-ngram-ratio", help="Filter: max share of words in repeated 5-grams."),
    blocklist: Optional[Path] = typer.Option(None, "--blocklist", help="File of blocked terms, one per line (default: built-in list)."),
    min_sample_tokens: int = typer.Option(8, "--min-sample-tokens", help="Drop (and count) samples shorter than this."),
    pack: str = typer.Option("document", "--pack", help="document: samples never cross documents; stream: consecutive documents share samples; "
                      "best-fit: whole sentence-cut pieces bin-packed into samples (densest)."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Prepare a pretraining corpus: clean, filter, dedup, split sentences, pack, tokenize in parallel.

    An interrupted run resumes with the same command and gives byte-identical output.

    Example: knowlm data prepare --input src/knowlm/resources/corpus.jsonl --tokenizer demo-work/pretrain --output-prefix demo-work/examples/corpus --seq-len 256 --workers 2

    Your corpus: knowlm data prepare --input 'data/*.jsonl.gz' --tokenizer ./llama-7b-hf --output-prefix out/corpus --seq-len 1024 --workers 8
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    from knowlm.data import DedupConfig, FilterConfig, PrepareConfig, prepare
    from knowlm.data.clean import load_blocklist
    from knowlm.data.sources import expand_inputs
    from knowlm.utils.outputs import check_prefix

    sources = [s.path for s in expand_inputs(input)]  # missing inputs are reported before existing outputs
    check_prefix(output_prefix, (".bin", ".idx", ".json"), overwrite=overwrite, inputs=[*sources, blocklist, tokenizer])

    fconfig = FilterConfig(
        min_chars=min_chars,
        max_symbol_ratio=max_symbol_ratio,
        max_digit_ratio=max_digit_ratio,
        max_dup_line_ratio=max_dup_line_ratio,
        max_dup_ngram_ratio=max_dup_ngram_ratio,
        blocklist=load_blocklist(blocklist) if blocklist else None,
        enabled=filter,
    )
    config = PrepareConfig(
        inputs=input,
        tokenizer=tokenizer,
        output_prefix=output_prefix,
        seq_len=seq_len,
        workers=workers,
        json_key=json_key,
        lang=lang,
        filter=fconfig,
        dedup=DedupConfig(mode=dedup, threshold=dedup_threshold),
        min_sample_tokens=min_sample_tokens,
        pack=pack,
    )
    start = time.perf_counter()
    with Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
        console=err_console, transient=True,
    ) as bar:
        task = bar.add_task("preparing", total=None)
        summary = prepare(config, progress=lambda done, total: bar.update(task, completed=done, total=total))
    elapsed = time.perf_counter() - start
    c = summary["counts"]
    dropped = ", ".join(f"{k} {v}" for k, v in summary["dropped"].items()) or "none"
    console.print(
        f"Prepared {c['documents']} of {c['lines']} documents from {len(summary['inputs'])} file(s) into "
        f"{c['sequences']} samples of at most {seq_len} tokens ({c['tokens']} tokens, {summary['dtype']}, "
        f"packing efficiency {summary['packing_efficiency']:.3f}) in {elapsed:.1f} s "
        f"({c['tokens'] / max(elapsed, 1e-9):,.0f} tokens/s with {workers} worker(s)). "
        f"Dropped: {dropped}; short samples dropped: {c['short_samples_dropped']}. "
        f"Wrote {output_prefix}.bin, .idx and .json."
    )


@data_app.command("inspect")
def inspect_cmd(
    prefix: str = typer.Argument(..., help="Dataset prefix (PREFIX.bin / PREFIX.idx)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a sample-length histogram PNG here."),
    samples: int = typer.Option(3, "--samples", help="How many samples to decode and show."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Counts, tokens per source, length histogram, packing efficiency and decoded samples.

    Example: knowlm data inspect demo-work/corpus/texts --plot demo-work/examples/lengths.png
    """
    from knowlm.data import inspect
    from knowlm.utils.outputs import check_output

    check_output(plot, overwrite=overwrite, inputs=[f"{prefix}.bin", f"{prefix}.idx", f"{prefix}.json"], flag="--plot")
    report = inspect(prefix, plot=plot, samples=samples)
    if as_json:
        console.print_json(json.dumps(report, ensure_ascii=False))
        return
    console.print(
        f"{prefix}: {report['sequences']} samples in {report['documents']} documents, {report['tokens']} tokens "
        f"({report['dtype']}), seq-len {report['seq_len']}, packing efficiency {report['packing_efficiency']:.3f}; "
        f"sample length min {report['length']['min']} / mean {report['length']['mean']} / max {report['length']['max']}."
    )
    for name, tokens in report["tokens_per_source"].items():
        console.print(f"  source {name}: {tokens} tokens")
    if report["dropped"]:
        console.print("  dropped: " + ", ".join(f"{k} {v}" for k, v in report["dropped"].items()))
    for row in report["length"]["histogram"]:
        console.print(f"  [{row['from']:>5}, {row['to']:>5}) {row['count']}")
    for i, text in enumerate(report.get("samples", [])):
        console.print(f"--- sample {i} ---", highlight=False)
        console.print(text[:600], markup=False, highlight=False)
    if plot:
        console.print(f"Histogram written to {plot}.")


@data_app.command("merge")
def merge_cmd(
    prefixes: List[str] = typer.Argument(..., help="Prepared dataset prefixes, in order."),
    output_prefix: str = typer.Option(..., "--output-prefix", "-o", help="Merged PREFIX.bin/.idx/.json."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Concatenate prepared datasets (same tokenizer) into one.

    Example: knowlm data merge demo-work/corpus/texts demo-work/corpus/texts --output-prefix demo-work/examples/twice
    """
    from knowlm.data import merge
    from knowlm.utils.outputs import check_prefix

    check_prefix(output_prefix, (".bin", ".idx", ".json"), overwrite=overwrite,
                 inputs=[f"{p}{suffix}" for p in prefixes for suffix in (".bin", ".idx", ".json")])
    summary = merge(prefixes, output_prefix)
    c = summary["counts"]
    console.print(
        f"Merged {len(prefixes)} datasets into {output_prefix}: {c['sequences']} samples, "
        f"{c['dataset_documents']} documents, {c['tokens']} tokens."
    )


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
