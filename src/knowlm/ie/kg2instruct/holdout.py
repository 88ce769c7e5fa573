"""Held-out documents (a hand-annotated test set) and the graph triples they state.

KG2Instruction keeps such documents out of every output, and its augmentation never states one of
their triples, so a model tuned on the output is scored on text and facts it has not been shown.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from knowlm.errors import KnowlmError
from knowlm.ie.kg2instruct.graph import KnowledgeGraph
from knowlm.ie.kg2instruct.records import LabelledDocument
from knowlm.utils.jsonl import iter_jsonl


def read_holdout(path: str | Path) -> list[dict]:
    """Records (``id`` and optional ``relations``) of documents no output may contain."""
    path = Path(path)
    if not path.is_file():
        raise KnowlmError(f"holdout file not found: {path}")
    rows = list(iter_jsonl(path, strict=True))
    if any(not isinstance(r, dict) or r.get("id") is None for r in rows):
        raise KnowlmError(f"{path}: every held-out record needs an 'id' (the corpus document id)")
    return rows


def held_out_triples(graph: KnowledgeGraph, labelled: list[LabelledDocument], holdout: list[dict]) -> set[tuple[str, str, str]]:
    """Graph triples (ids) a held-out document states: found by the labeller or annotated by hand."""
    ids = {str(r["id"]) for r in holdout}
    found = {t for doc in labelled if doc.id in ids for t in doc.triple_ids}
    by_name: dict[str, set[str]] = defaultdict(set)
    for entity in graph.entities.values():
        for name in (entity.name, *entity.aliases):
            by_name[name].add(entity.id)
    for record in holdout:
        for rel in record.get("relations") or []:
            for head in by_name.get(str(rel.get("head")), ()):
                for tail in by_name.get(str(rel.get("tail")), ()):
                    if rel.get("relation") in graph.edges.get((head, tail), ()):
                        found.add((head, rel["relation"], tail))
    return found
