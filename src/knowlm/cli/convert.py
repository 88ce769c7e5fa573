"""`knowlm convert`: public IE datasets -> IE records, and IE records -> SFT instructions."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from knowlm.cli._common import ALLOW_EMPTY, OVERWRITE, console
from knowlm.errors import KnowlmError


def convert(
    format: str = typer.Argument(..., help="conll2003, peoples-daily, scierc, nyt11, kbp37, gids, duie, duee, iepile, instructie; or sft (IE records -> instructions)."),
    input: Path = typer.Argument(..., help="The dataset file in its original format (sft: IE records JSONL)."),
    output: Path = typer.Argument(..., help="Output JSONL: IE records v1 (sft: alpaca instruction records)."),
    relation_map: Optional[Path] = typer.Option(None, help="JSON {label: new label} to rename the dataset's relation labels (NA drops), or a rel2id {label: id} to decode numeric labels."),
    task: Optional[str] = typer.Option(None, help="sft: ner, re, ee, eet, eea or spo."),
    schema: Optional[str] = typer.Option(None, help="sft: schema (JSON file/list); default: every type in the input, sorted."),
    style: str = typer.Option("json", help="sft: prompt style json (IEPile/OneKE) or knowlm (free-text tuples)."),
    lang: str = typer.Option("auto", help="sft: instruction language auto, zh or en."),
    split_num: Optional[int] = typer.Option(None, help="sft: schema items per instruction (default NER 6, RE 4, EE 4)."),
    neg_ratio: float = typer.Option(1.0, help="sft: negative schema items per positive one; -1 = always the whole schema."),
    seed: int = typer.Option(0, help="sft: seed for negative sampling and wordings."),
    overwrite: bool = OVERWRITE,
    allow_empty: bool = ALLOW_EMPTY,
) -> None:
    """Convert a public IE dataset to IE records (or IE records to SFT instructions).

    Relation labels stay the dataset's own unless --relation-map renames them. Reports how many
    units were read, what was skipped or left out and why, with the first file:line of each.

    Example: knowlm convert sft demo-work/kg2instruct/records.jsonl demo-work/examples/re_instructions.jsonl --task re

    Your download: knowlm convert duie duie_train.json duie.records.jsonl
    Your download: knowlm convert gids gids_train_bags.json gids.jsonl --relation-map gids_names.json
    """
    from knowlm.ie.datasets import ConvertReport, convert as run_convert, schema_from_records
    from knowlm.utils.jsonl import JsonlStats, iter_jsonl, write_jsonl
    from knowlm.utils.outputs import check_output

    if not input.is_file():
        raise KnowlmError(f"input file not found: {input}")
    check_output(output, overwrite=overwrite, inputs=[input, relation_map, schema], flag="OUT")

    if format == "sft":
        from knowlm.ie.instructions import records_to_instructions
        from knowlm.ie.records import validate
        from knowlm.ie.schema import check_task, load_schema

        if not task:
            raise KnowlmError("convert sft needs --task ner|re|ee|eet|eea|spo")
        task = check_task(task)
        stats = JsonlStats()
        records = [validate(r, f"{input} record {i + 1}") for i, r in enumerate(iter_jsonl(input, stats))]
        if not records and not allow_empty:
            raise KnowlmError(f"{input}: no IE records to turn into instructions (--allow-empty writes an empty file)")
        items = load_schema(task, schema) if schema else schema_from_records(records, task)
        if not items:
            raise KnowlmError(f"{input}: no {task} types found; pass --schema")
        n = write_jsonl(
            output,
            records_to_instructions(records, task, items, style=style, lang=lang, split_num=split_num,
                                    neg_ratio=None if neg_ratio < 0 else neg_ratio, seed=seed),
        )
        skipped = sum(stats.skipped.values())
        console.print(f"Wrote {n} {style}-style {task} instructions from {len(records)} records ({skipped} bad lines skipped) to {output}.")
        return
    records, report = run_convert(format, input, ConvertReport(format), relation_map=relation_map)
    if not records and not allow_empty:
        raise KnowlmError(f"{input}: nothing converted ({report.summary()}); --allow-empty writes an empty file")
    write_jsonl(output, records)
    counts = {k: sum(len(r.get(k) or []) for r in records) for k in ("entities", "relations", "events")}
    found = ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "no annotations"
    console.print(f"Converted {report.summary()}; {found}; wrote {output}.")


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)
