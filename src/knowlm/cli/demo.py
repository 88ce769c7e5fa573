"""`knowlm demo`: end to end on the bundled sample."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from knowlm.cli._common import OVERWRITE, console


def demo(
    workdir: Path = typer.Option(Path("demo-work"), help="Directory for every artefact, report.md and summary.json (a new or empty one, or one an earlier demo made)."),
    retrain: bool = typer.Option(False, "--retrain", help="Run the whole IE recipe (pretraining + tuning, about an hour on 2 CPU cores; extraction F1 on dev documents is logged while tuning) instead of loading the shipped checkpoints it produced."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Run the whole pipeline on the bundled bilingual sample, on CPU, in a few minutes.

    Builds a tokenizer and tiny LLaMA, prepares the corpus, continues pretraining, builds IE
    instructions from the bundled knowledge graph, instruction-tunes with LoRA, merges, extracts
    and evaluates, edits a fact and serves the model; writes WORKDIR/report.md.

    Example: knowlm demo --workdir demo-work
    """
    from knowlm.demo import is_demo_workdir, run_demo
    from knowlm.utils.outputs import check_output

    check_output(workdir, overwrite=overwrite or is_demo_workdir(workdir), kind="dir", flag="--workdir")
    started = time.perf_counter()
    report = run_demo(workdir, echo=console.print, retrain=retrain, overwrite=overwrite)
    console.print(
        f"Demo finished in {time.perf_counter() - started:.0f}s: every stage ran on the bundled sample. The IE model is a tiny "
        f"LLaMA (knowlm's IE recipe on 2 CPU cores), so its scores show the chain learns, not the quality a 7B/13B model "
        f"reaches. Figures and pictures: {report}; summary: {workdir}/summary.json. Next: the README's tour runs on {workdir}/."
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
