"""`knowlm demo`: end to end on the bundled sample."""

from __future__ import annotations

from pathlib import Path

import typer

from knowlm.cli._common import console


def demo(
    workdir: Path = typer.Option(Path("demo-work"), help="Directory for every artefact, report.md and summary.json (a new or empty one, or one an earlier demo made)."),
    retrain: bool = typer.Option(False, "--retrain", help="Run the whole IE recipe (pretraining + tuning, about an hour on 2 CPU cores) instead of loading the shipped checkpoints it produced."),
) -> None:
    """Run the whole pipeline on the bundled bilingual sample, on CPU, in a few minutes.

    Builds a tokenizer and tiny LLaMA, prepares the corpus, continues pretraining, builds IE
    instructions from the bundled knowledge graph, instruction-tunes with LoRA, merges, extracts
    and evaluates, edits a fact and serves the model; writes WORKDIR/report.md.

    Example: knowlm demo --workdir demo-work
    """
    from knowlm.demo import run_demo

    report = run_demo(workdir, echo=console.print, retrain=retrain)
    console.print(f"Demo finished: every stage ran on the bundled sample; report at {report}.")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
