"""``knowlm edit``: change facts inside a model (ROME, MEMIT, FT, IKE) and report the metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from knowlm.cli._common import console
from knowlm.errors import KnowlmError


def edit_command(
    model: str = typer.Option(..., "--model", "-m", help="Model directory (Hugging Face layout) or hub id."),
    method: str = typer.Option("rome", "--method", help="rome | memit | ft | ike"),
    requests: Path = typer.Option(..., "--requests", "-r", help="Edit requests (.json list or .jsonl)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Save the edited model here (+ metrics.json)."),
    mode: str = typer.Option("single", "--mode", help="single (each edit alone) | batch | sequential"),
    hparams: Optional[str] = typer.Option(None, "--hparams", help="Preset name (tiny, llama-7b, ...) or YAML file; default: by model size."),
    stats_corpus: Optional[Path] = typer.Option(None, "--stats-corpus", help="Indexed dataset prefix or JSONL of texts for key statistics (default: bundled corpus)."),
    stats_dir: Optional[Path] = typer.Option(None, "--stats-dir", help="Cache for key statistics (default: ~/.cache/knowlm/edit_stats)."),
    embedding_model: Optional[str] = typer.Option(None, "--embedding-model", help="IKE retriever: local sentence-embedding model dir, or 'minilm'; default TF-IDF."),
    demos: Optional[Path] = typer.Option(None, "--demos", help="IKE: extra requests to draw demonstrations from."),
    metrics_out: Optional[Path] = typer.Option(None, "--metrics", help="Also write the metrics JSON here."),
    dtype: str = typer.Option("auto", "--dtype", help="auto | float32 | float16 | bfloat16"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
) -> None:
    """Edit facts in a model and measure reliability, generalisation, locality and portability.

    Without --output the original weights are restored and only the metrics are reported.

    Example: knowlm edit --model tiny --method rome --requests reqs.json --output edited
    """
    from rich.progress import Progress

    from knowlm.edit import edit, load_requests, save_edited
    from knowlm.edit.hparams import METHODS
    from knowlm.edit.metrics import table
    from knowlm.models import load
    from knowlm.utils.atomic import atomic_write

    if method not in METHODS:
        raise KnowlmError(f"unknown --method {method!r}; choose one of: {', '.join(METHODS)}")
    reqs = load_requests(requests)
    demo_reqs = load_requests(demos) if demos else None
    lm, tokenizer = load(model, dtype=dtype, device=device)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"{method} edits", total=len(reqs))
        result = edit(lm, tokenizer, reqs, method=method, hparams=hparams, mode=mode, keep=output is not None,
                      stats_corpus=stats_corpus, stats_dir=stats_dir, embedding_model=embedding_model,
                      demos=demo_reqs, progress=lambda done, total: progress.update(task, completed=done))
    m = result.metrics
    arguments = {"model": model, "method": method, "requests": str(requests), "mode": mode, "hparams": hparams,
                 "stats_corpus": str(stats_corpus) if stats_corpus else None, "embedding_model": embedding_model}
    if output is not None:
        save_edited(result, lm, tokenizer, output, base_model=model, arguments=arguments)
    if metrics_out is not None:
        with atomic_write(metrics_out) as handle:
            json.dump(m, handle, ensure_ascii=False, indent=2)
    console.print(table(m["pre"], m["post"]), markup=False, highlight=False)
    post = m["post"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    where = f"saved the edited model and metrics.json to {output}" if output else "restored the original weights"
    console.print(
        f"{method.upper()} ({mode}) applied {m['num_requests']} edit(s) to {model} in {m['time_per_edit_s']:.2f} s per edit "
        f"(peak memory {m['peak_memory_mb']:.0f} MB): reliability {fmt(post['reliability'])}, generalisation "
        f"{fmt(post['generalisation'])}, locality {fmt(post['locality'])}, portability {fmt(post['portability'])}; "
        f"weights changed: {', '.join(m['edited_weights']) or 'none'}; {where}.",
        markup=False, highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("edit")(edit_command)
