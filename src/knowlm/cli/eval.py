"""`knowlm eval`: score predicted IE records against gold, or an IEPile results file in one go."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from knowlm.cli._common import ALLOW_EMPTY, OVERWRITE, console, err_console
from knowlm.errors import KnowlmError


def _table(result: dict, title: str, per_type: bool):
    from rich.table import Table

    from knowlm.ie.metrics import measures_present

    table = Table(title=title)
    for column in ("measure", "P", "R", "F1", "tp", "pred", "gold"):
        table.add_column(column, justify="left" if column == "measure" else "right")

    def row(name: str, e: dict) -> None:
        table.add_row(name, f"{e['precision'] * 100:.2f}", f"{e['recall'] * 100:.2f}", f"{e['f1'] * 100:.2f}", str(e["tp"]), str(e["n_pred"]), str(e["n_gold"]))

    for m in measures_present(result) or ["entity"]:
        row(m, result[m])
        if per_type:
            for name, t in result[m]["per_type"].items():
                row(f"  {name}", t)
    for task, entry in (result.get("per_task") or {}).items():
        for m, e in entry.items():
            if isinstance(e, dict) and "f1" in e:
                row(f"{task} {m}", e)
    return table


def _read_records(gold: Path, pred: Path, allow_empty: bool) -> tuple[list[dict], list[dict], dict]:
    from knowlm.ie.records import require_ie_fields
    from knowlm.utils.jsonl import JsonlStats, iter_jsonl_numbered

    stats = {"gold": JsonlStats(), "pred": JsonlStats()}
    gold_records = [require_ie_fields(r, f"{gold}:{n}") for n, r in iter_jsonl_numbered(gold, stats["gold"])]
    pred_records = [require_ie_fields(r, f"{pred}:{n}", prediction=True) for n, r in iter_jsonl_numbered(pred, stats["pred"])]
    if not gold_records:
        raise KnowlmError(f"{gold}: no gold records")
    if not pred_records and not allow_empty:
        raise KnowlmError(f"{pred}: no prediction records (--allow-empty scores it as predicting nothing)")
    gold_ids = {str(r["id"]) for r in gold_records if r.get("id") is not None}
    pred_ids = {str(r["id"]) for r in pred_records if r.get("id") is not None}
    if gold_ids and pred_ids and len(gold_ids) == len(gold_records) and not gold_ids & pred_ids:
        raise KnowlmError(f"no prediction id in {pred} matches a gold id in {gold} (e.g. {sorted(pred_ids)[0]!r} vs "
                          f"{sorted(gold_ids)[0]!r}): were they made from the same texts?")
    for name, path in (("gold", gold), ("pred", pred)):
        s = stats[name]
        if s.skipped:
            lines = ", ".join(f"{path}:{n}" for n in s.first_bad_lines)
            err_console.print(f"warning: skipped {sum(s.skipped.values())} bad {name} lines ({lines})")
    return gold_records, pred_records, {k: sum(s.skipped.values()) for k, s in stats.items()}


def evaluate(
    gold: Optional[Path] = typer.Option(None, help="Gold IE records (JSONL)."),
    pred: Optional[Path] = typer.Option(None, help="Predicted IE records (JSONL), e.g. from knowlm extract; records sharing an id are merged."),
    iepile: Optional[Path] = typer.Option(None, "--iepile", help="An IEPile results file (id/instruction/label/output lines): gold from label, predictions from output."),
    task: Optional[str] = typer.Option(None, help="--iepile: the IEPile task of every line (NER, RE, EE, EET, EEA, SPO) when lines do not say."),
    count: str = typer.Option("set", help="set (each distinct tuple once) or duplicates (every tuple as often as written: IEPile's default)."),
    match: Optional[str] = typer.Option(None, help="strict (trimmed), exact (as written) or normalized (NFKC, case, spaces); default strict, exact with --count duplicates."),
    relation_map: Optional[Path] = typer.Option(None, help="JSON {label: new label} applied to gold and predicted relations before scoring."),
    report: Optional[Path] = typer.Option(None, help="Write the full JSON report here."),
    plot: Optional[Path] = typer.Option(None, help="Write a per-type F1 bar chart (PNG) here."),
    per_type: bool = typer.Option(False, "--per-type", help="Also print per-type scores."),
    overwrite: bool = OVERWRITE,
    allow_empty: bool = ALLOW_EMPTY,
) -> None:
    """Micro precision/recall/F1 for entities, relations, event triggers and arguments.

    Predictions are matched to gold by id; parse failures count as empty predictions and are
    listed by reason. With --iepile the report also holds IEPile's own eval_func.py numbers.

    Example: knowlm eval --gold demo-work/ie-after/gold.jsonl --pred demo-work/ie-after/pred.jsonl --report demo-work/examples/report.json --plot demo-work/examples/f1.png

    Your IEPile results: knowlm eval --iepile results/test_output.jsonl --count duplicates
    """
    from knowlm.ie.datasets.base import load_relation_map, rename_relations
    from knowlm.ie.metrics import check_count, measures_present, normalizer, plot_per_type, score
    from knowlm.utils.atomic import atomic_write
    from knowlm.utils.outputs import check_outputs

    check_count(count)
    match = match or ("exact" if count == "duplicates" else "strict")
    normalizer(match)
    if iepile is not None and (gold is not None or pred is not None):
        raise KnowlmError("--iepile RESULTS replaces --gold and --pred (gold comes from its labels, predictions from its outputs)")
    if iepile is None and (gold is None or pred is None):
        raise KnowlmError("give --gold GOLD.jsonl and --pred PRED.jsonl, or --iepile RESULTS.jsonl")
    if task is not None and iepile is None:
        raise KnowlmError("--task names the task of an --iepile file's lines; gold records carry their own 'task'")
    for path, flag in ((gold, "--gold"), (pred, "--pred"), (iepile, "--iepile")):
        if path is not None and not path.is_file():
            raise KnowlmError(f"{flag} file not found: {path}")
    check_outputs([(report, "--report"), (plot, "--plot")], overwrite=overwrite, inputs=[gold, pred, iepile, relation_map])
    mapping = load_relation_map(relation_map).relation_map if relation_map else None
    if relation_map and not mapping:
        raise KnowlmError(f"{relation_map}: eval --relation-map renames labels: a JSON object {{label: new label}}")
    if iepile is not None:
        if not iepile.is_file():
            raise KnowlmError(f"input file not found: {iepile}")
        if mapping:
            raise KnowlmError("--relation-map works with --gold/--pred; convert the IEPile file first to rename labels")
        from knowlm.ie.iepile import score_results

        result = score_results(iepile, task=task, match=match, count=count)
        n_gold, n_pred, source = result["n_texts"], result["lines"], f"{iepile}"
        for reason, entry in result["skipped"].items():
            err_console.print(f"warning: skipped {entry['count']} {reason} (first at {entry['first']})")
    else:
        gold_records, pred_records, skipped = _read_records(gold, pred, allow_empty)
        if mapping:
            for r in gold_records + pred_records:
                rename_relations(r, mapping)
        result = score(gold_records, pred_records, match=match, count=count)
        result["skipped_lines"] = skipped
        n_gold, n_pred, source = len(gold_records), len(pred_records), f"{pred}"
    if result["merged_predictions"]:
        err_console.print(
            f"warning: {result['merged_predictions']} prediction records shared an id with an earlier one and were merged "
            f"(one text, several prompts)"
        )
    console.print(_table(result, f"{result['n_texts']} texts, {match} match, {count} counting", per_type))
    other = "duplicates" if count == "set" else "set"
    shown = measures_present(result) or ["entity"]
    console.print(f"{other} counting: " + ", ".join(f"{m} F1 {result['by_count'][other][m]['f1'] * 100:.2f}" for m in shown))
    for name, scores in (result.get("iepile") or {}).items():
        total = scores["total"]
        console.print(f"IEPile eval_func.py {name}: " + ", ".join(f"{k} {v}" for k, v in total.items()))
    if report:
        with atomic_write(report) as handle:
            json.dump(result, handle, ensure_ascii=False, indent=2)
    if plot:
        plot_per_type(result, plot)
    failures = result["parse_failures"]
    reasons = ", ".join(f"{k}: {v}" for k, v in failures["by_reason"].items()) or "none"
    main = shown[0]
    console.print(
        f"Scored {n_pred} predictions from {source} against {n_gold} gold texts: {main} F1 "
        f"{result[main]['f1'] * 100:.2f}; {sum(failures['by_reason'].values())} predictions failed to parse (reasons: {reasons}), "
        f"{failures['total']} texts had nothing parseable, {result['missing_predictions']} gold texts had no prediction"
        + (f"; report {report}" if report else "") + (f"; plot {plot}" if plot else "") + "."
    )


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)
