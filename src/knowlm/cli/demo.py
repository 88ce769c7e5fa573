"""`knowlm demo`: end to end on the bundled sample."""

from __future__ import annotations

from pathlib import Path

import typer

from knowlm.cli._common import OVERWRITE, console


def demo(
    workdir: Path = typer.Option(Path("demo-work"), help="Directory for every artefact and report.md."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Run the whole pipeline on the bundled bilingual sample, on CPU, in a few minutes.

    Builds a tokenizer and tiny LLaMA, prepares the corpus, continues pretraining, builds IE
    instructions from the bundled knowledge graph, instruction-tunes with LoRA, merges, extracts
    and evaluates, edits a fact and serves the model; writes WORKDIR/report.md.

    Example: knowlm demo --workdir demo-work
    """
    from knowlm.demo import run_demo
    from knowlm.utils.outputs import check_output

    check_output(workdir, overwrite=overwrite, kind="dir", flag="--workdir")
    report = run_demo(workdir, echo=console.print)
    console.print(f"Demo finished: every stage ran on the bundled sample; report at {report}.")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
