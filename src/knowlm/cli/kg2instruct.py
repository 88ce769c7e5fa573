"""`knowlm kg2instruct`: IE instruction data from a corpus plus a knowledge graph."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from knowlm.cli._common import ALLOW_EMPTY, OVERWRITE, console, parse_floats
from knowlm.errors import KnowlmError


def kg2instruct(
    corpus: List[Path] = typer.Option(..., help="Texts: JSONL with 'text' (optional 'id') or .txt, a document per line; repeatable."),
    kg: List[Path] = typer.Option(..., help="Knowledge graph JSONL: entity lines {id,name,type,aliases} and triple lines {head,relation,tail}; repeatable."),
    output: Path = typer.Option(..., help="Output directory: records.jsonl, train/dev/test.jsonl, stats.json, report.md, stats.png."),
    lang: str = typer.Option("auto", help="zh, en, or auto (detected per document)."),
    split_num: Optional[int] = typer.Option(None, help="Relation types per instruction (default 4)."),
    schema: Optional[Path] = typer.Option(None, help="Relation schema JSON {relations: {name: {head_types, tail_types, description}}}: type constraints."),
    relation_map: Optional[Path] = typer.Option(None, help="JSON {old relation: new relation or null}: rename, merge or drop relations."),
    rules: Optional[Path] = typer.Option(None, help="YAML {relation: {drop, max_char_distance, min_confidence, keywords}}: per-relation filters (keywords: a trigger word must be in the sentence)."),
    gold: Optional[Path] = typer.Option(None, help="Hand-annotated IE records (canonical entity names) to measure precision/recall of the labelling."),
    neg_ratio: float = typer.Option(1.0, help="Negative relation types sampled per positive one in training instructions."),
    style: str = typer.Option("json,knowlm", help="Instruction styles: json (IEPile/OneKE), knowlm (free text), or both."),
    split: str = typer.Option("0.8,0.1,0.1", help="train,dev,test fractions (by document)."),
    unit: str = typer.Option("sentence", help="sentence: triples within a sentence; document: across the whole document."),
    min_confidence: float = typer.Option(0.0, help="Drop triples whose entity link is less confident than this."),
    keep_empty: bool = typer.Option(False, help="Also keep sentences with two linked entities but no relation (negatives)."),
    case_sensitive: bool = typer.Option(False, help="Match aliases with exact letter case."),
    seed: int = typer.Option(0, help="Seed for splits, negative sampling and augmentation."),
    holdout: Optional[Path] = typer.Option(None, help="IE records (JSONL with 'id', e.g. a hand-annotated test set): those documents appear in no output and their triples are never used for augmentation."),
    records: str = typer.Option("unit", help="Records per labelling unit (sentence) and/or per whole document: unit, document or unit,document."),
    names: str = typer.Option("mention", help="Name heads, tails and entities as written (mention) or by the graph's name when the text contains it (canonical)."),
    entities: str = typer.Option("mentions", help="Entities of a record: every linked mention (mentions) or the heads and tails of its relations (arguments)."),
    task: str = typer.Option("re", help="Instruction tasks: re, ner or re,ner."),
    wording: str = typer.Option("full", help="Prompt wording: full (IEPile/KnowLM instructions) or compact (one short sentence, for small models)."),
    augment: int = typer.Option(0, help="Also write this many training passages from the graph's triples with sentence templates."),
    augment_swap: float = typer.Option(0.0, help="Share of augmented sentences that state another same-type entity's facts (counterfactual: only reading the text gives the answer)."),
    hard_negatives: bool = typer.Option(False, help="Sample negative relations first among those whose head and tail types overlap a positive's (needs --schema)."),
    substitute: int = typer.Option(0, help="Also write this many variants of each training document with its linked entities replaced by other graph entities of the same type (counterfactual, real sentences)."),
    templates: Optional[Path] = typer.Option(None, help="Templates YAML {lang: {relation: ['{head} ... {tail}.']}} for --augment (default: the bundled ones)."),
    overwrite: bool = OVERWRITE,
    allow_empty: bool = ALLOW_EMPTY,
) -> None:
    """Build relation-extraction instructions by distant supervision (KG2Instruction).

    Finds entity mentions, links them (resolving ambiguous aliases by document context), emits
    the graph's relations between entities of one sentence, filters them with rules and writes
    gold records plus instructions split by document.

    With --holdout, the listed documents (a test set) are kept out of every output: records,
    instructions, texts.jsonl (the texts training may read) and augmentation.

    Example: knowlm kg2instruct --corpus src/knowlm/resources/corpus.jsonl --kg src/knowlm/resources/kg.jsonl --schema src/knowlm/resources/kg_schema.json --output demo-work/examples/kg2i
    """
    from knowlm.ie.kg2instruct import KG2InstructConfig, load_rules
    from knowlm.ie.kg2instruct import kg2instruct as run
    from knowlm.utils.outputs import check_output

    for path in [*corpus, *kg]:
        if not path.is_file():
            raise KnowlmError(f"input file not found: {path}")
    check_output(output, overwrite=overwrite, kind="dir", inputs=[*corpus, *kg, schema, relation_map, rules, gold])
    if lang not in ("auto", "zh", "en"):
        raise KnowlmError("--lang must be auto, zh or en")
    styles = tuple(s.strip() for s in style.split(",") if s.strip())
    if not styles or any(s not in ("json", "knowlm") for s in styles):
        raise KnowlmError("--style takes json, knowlm or json,knowlm")
    ratios = parse_floats(split, "--split") or []
    if len(ratios) != 3:
        raise KnowlmError("--split takes three fractions, e.g. 0.8,0.1,0.1")
    config = KG2InstructConfig(
        lang=lang, unit=unit, ignore_case=not case_sensitive, min_confidence=min_confidence, rules=load_rules(rules) if rules else {},
        split_ratios=tuple(ratios), styles=styles, split_num=split_num, neg_ratio=neg_ratio, seed=seed, keep_empty=keep_empty,
        records=_names_list(records), names=names, entities=entities, tasks=_names_list(task), wording=wording, augment=augment, augment_swap=augment_swap, hard_negatives=hard_negatives, substitute=substitute,
    )
    stats = run(corpus, kg, output, config, schema_path=schema, relation_map_path=relation_map, gold_path=gold, progress=True,
                holdout_path=holdout, templates_path=templates, allow_empty=allow_empty)
    link = stats["linking"]
    summary = (
        f"Labelled {stats['documents']} documents ({stats['sentences']} sentences): {stats['mentions']} mentions, "
        f"{link['resolved']} ambiguous mentions resolved and {link['unresolved']} dropped; kept {stats['triples']} of "
        f"{stats['candidate_triples']} candidate triples over {len(stats['triples_per_relation'])} relations "
        f"(drops: {json.dumps(stats['dropped_by_rule'], ensure_ascii=False)}); wrote {stats['records']} records and "
        f"{stats['instructions_per_split']} instructions to {output}."
    )
    if stats.get("held_out_documents"):
        summary += f" Held out {stats['held_out_documents']} documents."
    if stats.get("augmented_records"):
        summary += f" Added {stats['augmented_records']} passages written from the graph."
    if stats.get("substituted_records"):
        summary += f" Added {stats['substituted_records']} records of documents with substituted entities."
    if "quality" in stats:
        q = stats["quality"]
        summary += f" Against {q['documents']} gold documents: precision {q['precision']:.3f}, recall {q['recall']:.3f}."
    console.print(summary)


def _names_list(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def register(app: typer.Typer) -> None:
    app.command("kg2instruct")(kg2instruct)
