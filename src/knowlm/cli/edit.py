"""``knowlm edit``: change facts inside a model (ROME, MEMIT, AlphaEdit, FT, GRACE, IKE) and report the metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from knowlm.cli._common import OVERWRITE, console
from knowlm.errors import KnowlmError

MODES = ("auto", "single", "batch", "sequential")


def choose_mode(mode: str, method: str, keep: bool) -> str:
    """``auto``: each edit alone when only measuring (EasyEdit's default); when the edited model is saved,
    all edits together: one joint update for MEMIT and IKE, one after another for the others."""
    if mode != "auto":
        return mode
    if not keep:
        return "single"
    return "batch" if method in ("memit", "ike") else "sequential"


def edit_command(
    model: str = typer.Option(..., "--model", "-m", help="Model directory (Hugging Face layout) or hub id."),
    method: str = typer.Option("rome", "--method", help="rome | memit | alphaedit | ft | grace | ike"),
    requests: Path = typer.Option(..., "--requests", "-r", help="Edit requests or a dataset file (.json/.jsonl): knowlm/EasyEdit/KnowEdit records, ZsRE (MEND), CounterFact (ROME) or MQuAKE."),
    data_format: str = typer.Option("auto", "--format", help="auto | knowlm | zsre | counterfact | mquake"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Use only the first N requests."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Save the edited model here (+ metrics.json)."),
    mode: str = typer.Option("auto", "--mode", help="auto | single (each edit alone, restored) | batch (all at once) | sequential (one after another). auto: single without --output; with --output batch for memit/ike, else sequential."),
    eval_every: int = typer.Option(0, "--eval-every", min=0, help="Sequential mode: also measure the edits so far after every K edits (a curve in metrics.json and the plot)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the sequential-editing curve here (PNG; also saved as edit_curve.png in --output)."),
    hparams: Optional[str] = typer.Option(None, "--hparams", help="Preset name (tiny, llama-7b, gpt2-xl, ...), a knowlm YAML or an EasyEdit hparams YAML; default: by model size."),
    template: Optional[str] = typer.Option(None, "--template", help="Edit and measure an instruction model through this prompt template (alpaca, llama2, chatml); 'model' = the one in its knowlm.json; default: plain prompts."),
    fluency: bool = typer.Option(False, "--fluency", help="Also report KnowEdit's Fluency (n-gram entropy of sampled text; slower)."),
    stats_corpus: Optional[Path] = typer.Option(None, "--stats-corpus", help="Indexed dataset prefix or JSONL of texts for key statistics (default: bundled corpus)."),
    stats_dir: Optional[Path] = typer.Option(None, "--stats-dir", help="Cache for key statistics (default: ~/.cache/knowlm/edit_stats)."),
    embedding_model: Optional[str] = typer.Option(None, "--embedding-model", help="IKE retriever: local sentence-embedding model dir, or 'minilm'; default TF-IDF."),
    demos: Optional[Path] = typer.Option(None, "--demos", help="IKE: extra requests to draw demonstrations from."),
    metrics_out: Optional[Path] = typer.Option(None, "--metrics", help="Also write the metrics JSON here."),
    overwrite: bool = OVERWRITE,
    dtype: str = typer.Option("auto", "--dtype", help="auto | float32 | float16 | bfloat16"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
) -> None:
    """Edit facts in a model and measure reliability, generalisation, locality and portability (per category).

    Without --output the original weights are restored and only the metrics are reported.

    Example: knowlm edit --model demo-work/merged --method rome --requests demo-work/edit_requests.json --hparams tiny --output demo-work/examples/edited

    Your model: knowlm edit --model ./llama-7b --method rome --requests knowedit_counterfact.json --output edited
    """
    from rich.progress import Progress

    from knowlm.edit import edit, load_requests, save_edited
    from knowlm.edit.hparams import METHODS
    from knowlm.edit.metrics import knowedit_line, table
    from knowlm.models import load
    from knowlm.utils.atomic import atomic_write

    if method not in METHODS:
        raise KnowlmError(f"unknown --method {method!r}; choose one of: {', '.join(METHODS)}")
    if mode not in MODES:
        raise KnowlmError(f"unknown --mode {mode!r}; choose one of: {', '.join(MODES)}")
    from knowlm.utils.outputs import check_output, check_outputs

    inputs = [requests, demos, model, hparams, stats_corpus]
    check_output(output, overwrite=overwrite, kind="dir", inputs=inputs)
    check_outputs([(metrics_out, "--metrics"), (plot, "--plot")], overwrite=overwrite, inputs=inputs)
    if template and template not in ("model", "raw"):
        from knowlm.models.templates import get

        get(template)
    reqs = load_requests(requests, data_format)[:limit]
    demo_reqs = load_requests(demos) if demos else None
    chosen_mode = choose_mode(mode, method, output is not None)
    lm, tokenizer = load(model, dtype=dtype, device=device)
    if template == "model":  # the template the model was tuned with (knowlm.json); plain prompts for a base model
        from knowlm.models import read_manifest

        template = read_manifest(model).get("template") if Path(model).is_dir() else None
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"{method} edits ({chosen_mode})", total=len(reqs))
        result = edit(lm, tokenizer, reqs, method=method, hparams=hparams, mode=chosen_mode, keep=output is not None,
                      stats_corpus=stats_corpus, stats_dir=stats_dir, embedding_model=embedding_model, demos=demo_reqs,
                      template=template, eval_every=eval_every, fluency=fluency,
                      progress=lambda done, total: progress.update(task, completed=done))
    m = result.metrics
    arguments = {"model": model, "method": method, "requests": str(requests), "format": data_format, "limit": limit,
                 "mode": chosen_mode, "hparams": hparams, "template": template, "eval_every": eval_every,
                 "stats_corpus": str(stats_corpus) if stats_corpus else None, "embedding_model": embedding_model}
    if output is not None:
        save_edited(result, lm, tokenizer, output, base_model=model, arguments=arguments)
    if metrics_out is not None:
        with atomic_write(metrics_out) as handle:
            json.dump(m, handle, ensure_ascii=False, indent=2)
    if plot is not None and m.get("curve"):
        from knowlm.edit.curves import plot_curve

        plot_curve(m, plot)
    console.print(table(m["pre"], m["post"]), markup=False, highlight=False)
    console.print(knowedit_line(m["knowedit"]), markup=False, highlight=False)
    post = m["post"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    where = f"saved the edited model and metrics.json to {output}" if output else "restored the original weights"
    short = [f"{name} {st['samples']} of {st['requested_samples']} samples" for name, st in m["statistics"].items()
             if st["samples"] < st["requested_samples"]]
    notes = f"; statistics corpus short: {', '.join(short)}" if short else ""
    curve = f"; curve over {len(m['curve'])} points" + (f" plotted to {plot}" if plot else "") if m.get("curve") else ""
    console.print(
        f"{method.upper()} ({chosen_mode}) applied {m['num_requests']} edit(s) to {model} in {m['time_per_edit_s']:.2f} s per edit "
        f"(peak memory {m['peak_memory_mb']:.0f} MB): reliability {fmt(post['reliability'])}, generalisation "
        f"{fmt(post['generalisation'])}, locality {fmt(post['locality'])}, portability {fmt(post['portability'])}; "
        f"weights changed: {', '.join(m['edited_weights']) or 'none'}{notes}{curve}; {where}.",
        markup=False, highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("edit")(edit_command)
