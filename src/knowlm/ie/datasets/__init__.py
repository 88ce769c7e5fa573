"""Converters from public IE datasets to IE record v1 (``knowlm convert FORMAT IN OUT``).

Each converter reads the original release layout and counts, with the first ``file:line`` of
each reason, what it did not write (``skipped``: a unit; a wrong-typed field anywhere in a unit
skips it as ``bad_field``) and what it left out of written records (``dropped``: an NA relation
mention, an offset that does not point at its span...). Relation labels are the dataset's own;
``--relation-map`` renames them the same way for every format (see :mod:`.base`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from knowlm.errors import KnowlmError
from knowlm.ie.datasets.base import ConvertOptions, ConvertReport, load_relation_map, rename_relations
from knowlm.ie.datasets.events import convert_duee
from knowlm.ie.datasets.instruct import convert_iepile, convert_instructie
from knowlm.ie.datasets.relations import convert_duie, convert_gids, convert_nyt11, convert_scierc
from knowlm.ie.datasets.tagged import convert_conll2003, convert_kbp37, convert_peoples_daily
from knowlm.ie.records import is_na

CONVERTERS: dict[str, Callable[[Path, ConvertReport, ConvertOptions], Iterable[dict]]] = {
    "conll2003": convert_conll2003,
    "peoples-daily": convert_peoples_daily,
    "scierc": convert_scierc,
    "nyt11": convert_nyt11,
    "kbp37": convert_kbp37,
    "gids": convert_gids,
    "duie": convert_duie,
    "duee": convert_duee,
    "iepile": convert_iepile,
    "instructie": convert_instructie,
}


def convert(
    fmt: str, path, report: ConvertReport | None = None, relation_map: ConvertOptions | str | Path | None = None
) -> tuple[list[dict], ConvertReport]:
    """All records of one dataset file in IE record v1, and the report of what was left out.

    ``relation_map``: a ``--relation-map`` file (or loaded :class:`ConvertOptions`)."""
    if fmt not in CONVERTERS:
        raise KnowlmError(f"unknown format {fmt!r}; choose one of: {', '.join(CONVERTERS)}, sft")
    path = Path(path)
    if not path.is_file():
        raise KnowlmError(f"input file not found: {path}")
    options = relation_map if isinstance(relation_map, ConvertOptions) else load_relation_map(relation_map) if relation_map else ConvertOptions()
    report = report or ConvertReport(fmt)
    records = [rename_relations(r, options, report, str(r.get("id"))) for r in CONVERTERS[fmt](path, report, options)]
    report.written = len(records)
    return records, report


def schema_from_records(records: Iterable[dict], task: str) -> list:
    """Every type / relation / event type (with its roles) seen in ``records``, sorted: a
    deterministic default schema for SFT conversion and evaluation."""
    records = list(records)
    if task == "ner":
        return sorted({e["type"] for r in records for e in r.get("entities") or []})
    if task == "re":
        return sorted({x["relation"] for r in records for x in r.get("relations") or [] if not is_na(x["relation"])})
    if task == "spo":
        return [
            {"subject_type": s, "predicate": p, "object_type": o}
            for s, p, o in sorted(
                {(x.get("head_type") or "", x["relation"], x.get("tail_type") or "") for r in records for x in r.get("relations") or [] if not is_na(x["relation"])}
            )
        ]
    if task == "eet":
        return sorted({e["type"] for r in records for e in r.get("events") or []})
    roles: dict[str, set[str]] = {}
    for r in records:
        for e in r.get("events") or []:
            roles.setdefault(e["type"], set()).update(a["role"] for a in e.get("arguments") or [])
    return [{"event_type": k, "arguments": sorted(v)} for k, v in sorted(roles.items())]


__all__ = ["CONVERTERS", "ConvertOptions", "ConvertReport", "convert", "load_relation_map", "schema_from_records"]
