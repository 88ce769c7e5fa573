"""Joint NER + RE consistency: keep a relation only when the same text's entities type it right.

A relation schema says which entity types each relation joins (``place of birth``: a person and a
location; :class:`knowlm.ie.kg2instruct.RelationSchema`). When a model is asked for entities and
for relations of the same text, a relation whose head or tail the entity answer does not type as
the relation allows is at odds with the model's own reading of the text, and is most often a
guess made to fill a relation key (``Edison place of birth West Orange``). Dropping those trades a
little recall for much precision on a small model. A relation with no known signature, or in a
text with no entity answer, is kept: no evidence is no contradiction.

Torch-free and model-free: it reads records, nothing else.
"""

from __future__ import annotations

from typing import Mapping

Signatures = Mapping[str, tuple[set[str], set[str]]]  # relation -> (head types, tail types); empty = any


def signatures_from_schema(schema) -> dict[str, tuple[set[str], set[str]]]:
    """``{relation: (head types, tail types)}`` from a :class:`~knowlm.ie.kg2instruct.RelationSchema`."""
    return {name: (set(schema.head_types.get(name) or ()), set(schema.tail_types.get(name) or ()))
            for name in set(schema.head_types) | set(schema.tail_types)}


def typed_relations(record: Mapping, signatures: Signatures) -> tuple[list[dict], int]:
    """``record``'s relations that its entities type as the signature allows, and how many were dropped."""
    relations = list(record.get("relations") or [])
    entities = record.get("entities") or []
    if not entities:
        return relations, 0
    types: dict[str, set[str]] = {}
    for entity in entities:
        types.setdefault(entity["text"], set()).add(entity["type"])
    kept = []
    for relation in relations:
        heads, tails = signatures.get(relation["relation"], (set(), set()))
        ok = (not heads or bool(types.get(relation["head"], set()) & heads)) and (not tails or bool(types.get(relation["tail"], set()) & tails))
        if ok:
            kept.append(relation)
    return kept, len(relations) - len(kept)
