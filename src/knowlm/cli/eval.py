"""`knowlm eval`: score predicted IE records against gold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from knowlm.cli._common import console
from knowlm.errors import KnowlmError


def evaluate(
    gold: Path = typer.Option(..., help="Gold IE records (JSONL)."),
    pred: Path = typer.Option(..., help="Predicted IE records (JSONL), e.g. from knowlm extract."),
    report: Optional[Path] = typer.Option(None, help="Write the full JSON report here."),
    plot: Optional[Path] = typer.Option(None, help="Write a per-type F1 bar chart (PNG) here."),
    match: str = typer.Option("strict", help="strict (trimmed exact) or normalized (NFKC, case folding, whitespace)."),
    per_type: bool = typer.Option(False, "--per-type", help="Also print per-type scores."),
) -> None:
    """Micro precision/recall/F1 for entities, relations, event triggers and arguments.

    Set semantics per text, NA relations excluded, predictions matched to gold by id; parse
    failures count as empty predictions and are listed by reason.

    Example: knowlm eval --gold gold.jsonl --pred pred.jsonl --report report.json --plot f1.png
    """
    from rich.table import Table

    from knowlm.ie.metrics import measures_present, normalizer, plot_per_type, score
    from knowlm.ie.records import validate
    from knowlm.utils.atomic import atomic_write
    from knowlm.utils.jsonl import JsonlStats, iter_jsonl

    normalizer(match)
    stats = {"gold": JsonlStats(), "pred": JsonlStats()}
    gold_records = [validate(r, f"{gold} record {i + 1}") for i, r in enumerate(iter_jsonl(gold, stats["gold"]))]
    pred_records = list(iter_jsonl(pred, stats["pred"]))
    if not gold_records:
        raise KnowlmError(f"{gold}: no gold records")
    result = score(gold_records, pred_records, match=match)
    result["skipped_lines"] = {k: sum(s.skipped.values()) for k, s in stats.items()}
    table = Table(title=f"{len(gold_records)} texts, {match} match")
    for column in ("measure", "P", "R", "F1", "tp", "pred", "gold"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for m in measures_present(result) or ["entity"]:
        e = result[m]
        table.add_row(m, f"{e['precision'] * 100:.2f}", f"{e['recall'] * 100:.2f}", f"{e['f1'] * 100:.2f}", str(e["tp"]), str(e["n_pred"]), str(e["n_gold"]))
        if per_type:
            for name, t in e["per_type"].items():
                table.add_row(f"  {name}", f"{t['precision'] * 100:.2f}", f"{t['recall'] * 100:.2f}", f"{t['f1'] * 100:.2f}", str(t["tp"]), str(t["n_pred"]), str(t["n_gold"]))
    console.print(table)
    if report:
        with atomic_write(report) as handle:
            json.dump(result, handle, ensure_ascii=False, indent=2)
    if plot:
        plot_per_type(result, plot)
    failures = result["parse_failures"]
    reasons = ", ".join(f"{k}: {v}" for k, v in failures["by_reason"].items()) or "none"
    main = (measures_present(result) or ["entity"])[0]
    console.print(
        f"Scored {len(pred_records)} predictions against {len(gold_records)} gold texts: {main} F1 "
        f"{result[main]['f1'] * 100:.2f}; {failures['total']} predictions failed to parse (reasons: {reasons}), "
        f"{result['missing_predictions']} gold texts had no prediction"
        + (f"; report {report}" if report else "") + (f"; plot {plot}" if plot else "") + "."
    )


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)
