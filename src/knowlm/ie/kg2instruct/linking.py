"""Entity linking: pick one entity per mention using the document as context.

An alias that names one entity links with confidence 1. For an ambiguous alias each candidate
scores by how many of its graph neighbours the document mentions unambiguously (neighbours in
the same sentence count extra); exact letter case breaks ties between candidates with evidence.
No evidence, or a tie, means the mention is dropped and counted: a wrong link makes a wrong
training label.
"""

from __future__ import annotations

from dataclasses import dataclass

from knowlm.ie.kg2instruct.graph import KnowledgeGraph
from knowlm.ie.kg2instruct.mentions import Mention


@dataclass
class Linked:
    mention: Mention
    entity: str
    confidence: float
    sentence: int


@dataclass
class LinkStats:
    unambiguous: int = 0
    resolved: int = 0
    unresolved: int = 0


def link_document(
    graph: KnowledgeGraph, sentences_mentions: list[list[Mention]], stats: LinkStats, same_sentence_weight: float = 0.5
) -> list[Linked]:
    """Link every mention of one document (mentions grouped by sentence)."""
    context = {m.candidates[0] for ms in sentences_mentions for m in ms if len(m.candidates) == 1}
    linked: list[Linked] = []
    for index, mentions in enumerate(sentences_mentions):
        sentence_context = {m.candidates[0] for m in mentions if len(m.candidates) == 1}
        for mention in mentions:
            if len(mention.candidates) == 1:
                stats.unambiguous += 1
                linked.append(Linked(mention, mention.candidates[0], 1.0, index))
                continue
            scores = {}
            for candidate in mention.candidates:
                near = graph.neighbours.get(candidate, set())
                scores[candidate] = len(near & context) + same_sentence_weight * len(near & sentence_context)
            ranked = sorted(scores.items(), key=lambda kv: (kv[1], kv[0] in mention.exact), reverse=True)
            (best, best_score), (_, second_score) = ranked[0], ranked[1]
            tie = best_score == second_score and (best in mention.exact) == (ranked[1][0] in mention.exact)
            if best_score <= 0 or tie:
                stats.unresolved += 1
                continue
            stats.resolved += 1
            # Evidence-weighted confidence: one neighbour of support gives 0.5, more support approaches 1.
            linked.append(Linked(mention, best, best_score / (sum(scores.values()) + 1.0), index))
    return linked
