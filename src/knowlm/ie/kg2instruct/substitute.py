"""Entity substitution: real labelled documents with their entities replaced by other graph
entities of the same type (mention replacement, a standard augmentation for extraction).

Template passages teach relation phrasings, but their sentences are not the corpus's. A variant
here keeps a real training document word for word except its linked entities: every mention of
an entity becomes a mention of another entity of the same type (its name for the name, one of its
aliases for an alias, so "Marie Curie ... Curie" stays "Alan Turing ... Turing"), and each fact
is relabelled with the new entities. The facts are counterfactual; the sentences are real; the
only way to answer is to read the text. Facts in ``exclude`` (held-out documents') never appear.
"""

from __future__ import annotations

import random
from collections import defaultdict

from knowlm.ie.kg2instruct.graph import KnowledgeGraph
from knowlm.ie.kg2instruct.records import Fact, LabelledDocument, LabelledUnit, Span


class Substituter:
    """Makes variants of labelled documents; deterministic for a seed."""

    def __init__(self, graph: KnowledgeGraph, exclude: set[tuple[str, str, str]], seed: int = 0):
        self.graph = graph
        self.exclude = exclude
        self.by_type: dict[str, list[str]] = defaultdict(list)
        for entity in sorted(graph.entities.values(), key=lambda e: e.id):
            self.by_type[entity.type].append(entity.id)
        self.rng = random.Random(f"substitute:{seed}")

    def _surface(self, old: Span, new: str, cache: dict) -> str:
        key = (old.entity, old.text)
        if key not in cache:
            old_entity, new_entity = self.graph.entities[old.entity], self.graph.entities[new]
            aliases = [a for a in new_entity.aliases if a != new_entity.name]
            as_name = old.text.casefold() == old_entity.name.casefold()
            cache[key] = new_entity.name if as_name or not aliases else self.rng.choice(aliases)
        return cache[key]

    def variant(self, doc: LabelledDocument, suffix: str) -> LabelledDocument | None:
        """``doc`` with every linked entity replaced, or None when no fact survives."""
        entities = sorted({s.entity for u in doc.units for s in u.spans})
        mapping: dict[str, str] = {}
        taken = set(entities)
        for entity in entities:
            pool = [e for e in self.by_type[self.graph.entities[entity].type] if e not in taken]
            if pool:
                mapping[entity] = self.rng.choice(pool)
                taken.add(mapping[entity])
        cache: dict = {}
        text, units, moved = "", [], 0  # moved: characters added so far (new minus old)
        cursor = 0
        for unit in doc.units:
            spans = sorted(unit.spans, key=lambda s: s.start)
            start_in_new = unit.offset + moved
            text += doc.text[cursor:unit.offset]
            piece, last, new_spans, by_old = "", 0, [], {}
            for span in spans:
                if span.start < last:  # overlapping mentions: keep the first
                    continue
                new_entity = mapping.get(span.entity, span.entity)
                surface = self._surface(span, new_entity, cache) if span.entity in mapping else span.text
                piece += unit.text[last:span.start]
                new_span = Span(new_entity, surface, len(piece))
                new_spans.append(new_span)
                by_old[id(span)] = new_span
                piece += surface
                last = span.start + len(span.text)
            piece += unit.text[last:]
            facts = []
            for fact in unit.facts:
                head, tail = by_old.get(id(fact.head)), by_old.get(id(fact.tail))
                if head is None or tail is None or head.entity == tail.entity:
                    continue
                if (head.entity, fact.relation, tail.entity) in self.exclude:
                    continue
                facts.append(Fact(head, fact.relation, tail))
            units.append(LabelledUnit(unit.index, piece, start_in_new, new_spans, facts))
            text += piece
            moved += len(piece) - len(unit.text)
            cursor = unit.offset + len(unit.text)
        text += doc.text[cursor:]
        if not any(u.facts for u in units):
            return None
        ids = [(f.head.entity, f.relation, f.tail.entity) for u in units for f in u.facts]
        return LabelledDocument(f"{doc.id}{suffix}", doc.lang, [], [], units, text, ids)
