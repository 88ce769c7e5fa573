"""Candidate triples from linked mentions, then rule filtering with every drop counted."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from knowlm.ie.kg2instruct.graph import KnowledgeGraph, RelationSchema
from knowlm.ie.kg2instruct.linking import Linked


@dataclass
class Triple:
    head: Linked
    relation: str
    tail: Linked


@dataclass
class RelationRule:
    """Per-relation rules (all optional): drop it, demand closeness or linking confidence, or
    demand a trigger word in the sentence (keyword-constrained distant supervision)."""

    drop: bool = False
    max_char_distance: int | None = None
    min_confidence: float | None = None
    keywords: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.keywords = tuple(k.lower() for k in self.keywords or ())


@dataclass
class TripleFilter:
    schema: RelationSchema | None = None
    rules: dict[str, RelationRule] = field(default_factory=dict)
    min_confidence: float = 0.0
    drops: Counter = field(default_factory=Counter)

    def reason_to_drop(self, graph: KnowledgeGraph, triple: Triple, sentence: str = "") -> str | None:
        head, tail = graph.entities[triple.head.entity], graph.entities[triple.tail.entity]
        if head.id == tail.id:
            return "self_relation"
        if self.schema is not None and not self.schema.allows(triple.relation, head.type, tail.type):
            return "type_constraint"
        rule = self.rules.get(triple.relation, RelationRule())
        if rule.drop:
            return "relation_rule_drop"
        confidence = min(triple.head.confidence, triple.tail.confidence)
        if confidence < (rule.min_confidence if rule.min_confidence is not None else self.min_confidence):
            return "low_link_confidence"
        if rule.max_char_distance is not None:
            a, b = triple.head.mention, triple.tail.mention
            gap = max(a.start, b.start) - min(a.end, b.end)
            if gap > rule.max_char_distance:
                return "relation_rule_distance"
        if rule.keywords and not any(k in sentence.lower() for k in rule.keywords):
            return "relation_rule_keyword"
        return None

    def apply(self, graph: KnowledgeGraph, candidates: list[Triple], sentence: str = "") -> list[Triple]:
        kept: list[Triple] = []
        seen: set[tuple[str, str, str]] = set()
        for triple in candidates:
            reason = self.reason_to_drop(graph, triple, sentence)
            key = (triple.head.entity, triple.relation, triple.tail.entity)
            inverse = (triple.tail.entity, triple.relation, triple.head.entity)
            if reason is None and key in seen:
                reason = "duplicate"
            elif reason is None and inverse in seen:
                reason = "inverse_duplicate"  # symmetric facts (spouse) stated once
            if reason:
                self.drops[reason] += 1
                continue
            seen.add(key)
            kept.append(triple)
        return kept


def candidate_triples(graph: KnowledgeGraph, linked: list[Linked]) -> list[Triple]:
    """Every graph relation between two linked mentions, in the graph's direction, text order."""
    out: list[Triple] = []
    for head in linked:
        for tail in linked:
            if head is tail:
                continue
            for relation in graph.edges.get((head.entity, tail.entity), ()):
                out.append(Triple(head, relation, tail))
    out.sort(key=lambda t: (min(t.head.mention.start, t.tail.mention.start), t.head.mention.start, t.relation))
    return out


def load_rules(path) -> dict[str, RelationRule]:
    """Rules from YAML/JSON ``{relation: {drop, max_char_distance, min_confidence, keywords}}``."""
    import yaml

    from knowlm.errors import KnowlmError
    from knowlm.utils.jsonl import read_text

    try:
        raw = yaml.safe_load(read_text(path)) or {}
        return {name: RelationRule(**(spec or {})) for name, spec in raw.items()}
    except (OSError, yaml.YAMLError, TypeError, AttributeError) as exc:
        raise KnowlmError(f"cannot read rules {path}: {exc}") from None
