"""Labelled text -> IE records: how entities are named and which entities a record lists.

Two naming policies for the heads, tails and entities of a record:

* ``mention`` — the text as written (``Curie``), KG2Instruction's default.
* ``canonical`` — the graph's name of the entity (``Marie Curie``) when that name occurs in the
  record's text, else the text as written. Hand-annotated relation sets name entities this way
  (the bundled ``kg_gold.jsonl`` does), and the model can always copy the answer from its input.

Two entity policies:

* ``mentions`` — every linked mention (NER in the usual sense).
* ``arguments`` — the entities that take part in a kept relation, typed by the graph: the same
  definition the demo derives from hand-annotated relations (:func:`argument_entities`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from knowlm.ie.kg2instruct.graph import KnowledgeGraph
from knowlm.ie.records import find_span

NAMES = ("mention", "canonical")
ENTITIES = ("mentions", "arguments")


@dataclass(frozen=True)
class Span:
    """An entity as a text writes it: graph id, surface text, character start in that text."""

    entity: str
    text: str
    start: int


@dataclass(frozen=True)
class Fact:
    """A relation between two spans of one text."""

    head: Span
    relation: str
    tail: Span


@dataclass
class LabelledUnit:
    """One labelling unit (sentence or document) with offsets relative to the document."""

    index: int
    text: str
    offset: int
    spans: list[Span]
    facts: list[Fact]


@dataclass
class LabelledDocument:
    id: str
    lang: str
    records: list[dict]
    triples: list[tuple[str, str, str]]  # canonical (head name, relation, tail name), for quality checks
    units: list[LabelledUnit] = field(default_factory=list)
    text: str = ""
    triple_ids: list[tuple[str, str, str]] = field(default_factory=list)  # (head id, relation, tail id)


def entity_name(graph: KnowledgeGraph, span: Span, text: str, names: str) -> str:
    if names == "canonical":
        name = graph.entities[span.entity].name
        if name in text:
            return name
    return span.text


def make_record(
    graph: KnowledgeGraph, id: str, text: str, lang: str, facts: list[Fact], spans: list[Span],
    names: str = "mention", entities: str = "mentions", source: str = "kg2instruct",
) -> dict:
    """An IE record v1 for ``text`` (spans' offsets are relative to ``text``)."""
    facts = sorted(facts, key=lambda f: (f.head.start, f.tail.start))  # reading order: an easier answer to learn
    relations, seen = [], set()
    for fact in facts:
        head, tail = entity_name(graph, fact.head, text, names), entity_name(graph, fact.tail, text, names)
        key = (head, fact.relation, tail)
        if key in seen:
            continue
        seen.add(key)
        relations.append({
            "head": head, "relation": fact.relation, "tail": tail,
            "head_type": graph.entities[fact.head.entity].type, "tail_type": graph.entities[fact.tail.entity].type,
        })
    listed = [s for fact in facts for s in (fact.head, fact.tail)] if entities == "arguments" else spans
    listed = sorted(listed, key=lambda s: s.start)
    items, seen_entities = [], set()
    for span in listed:
        name = entity_name(graph, span, text, names)
        etype = graph.entities[span.entity].type
        if names == "mention" and entities == "mentions":  # every mention, at its own offsets
            items.append({"text": span.text, "type": etype, "start": span.start, "end": span.start + len(span.text)})
            continue
        if (name, etype) in seen_entities:
            continue
        seen_entities.add((name, etype))
        found = (span.start, span.start + len(span.text)) if name == span.text else find_span(text, name)
        item = {"text": name, "type": etype}
        if found:
            item["start"], item["end"] = found
        items.append(item)
    return {"id": id, "text": text, "lang": lang, "source": source, "entities": items, "relations": relations}


def entity_types(graph: KnowledgeGraph) -> dict[str, str]:
    """Name or alias -> entity type (canonical names win over aliases; first entity wins a tie)."""
    types: dict[str, str] = {}
    for entity in graph.entities.values():
        types.setdefault(entity.name, entity.type)
    for entity in graph.entities.values():
        for alias in entity.aliases:
            types.setdefault(alias, entity.type)
    return types


def argument_entities(record: dict, types: dict[str, str]) -> list[dict]:
    """The entities of a relation-annotated record: every head and tail, typed by the graph.

    How entity gold is derived from hand-annotated relations (the bundled gold set has relations
    only); ``kg2instruct --entities arguments`` labels training records the same way.
    """
    items, seen = [], set()
    for relation in record.get("relations") or []:
        for key, type_key in (("head", "head_type"), ("tail", "tail_type")):
            name = relation.get(key)
            etype = relation.get(type_key) or types.get(name)
            if not name or not etype or (name, etype) in seen:
                continue
            seen.add((name, etype))
            items.append({"text": name, "type": etype})
    return items
