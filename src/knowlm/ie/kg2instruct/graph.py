"""The knowledge graph: entity lines and triple lines in JSONL, told apart by their keys.

Entity: ``{"id", "name", "type", "aliases": [...]}``; triple: ``{"head": id, "relation": name,
"tail": id}``. A malformed line is an error naming file and line: a silently half-read graph
would silently produce wrong training data.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from knowlm.errors import KnowlmError
from knowlm.utils.jsonl import open_text, read_text


@dataclass(frozen=True)
class Entity:
    id: str
    name: str
    type: str
    aliases: tuple[str, ...]


@dataclass
class RelationSchema:
    """Allowed head/tail types per relation (empty = unconstrained) and relation renames/merges."""

    head_types: dict[str, set[str]] = field(default_factory=dict)
    tail_types: dict[str, set[str]] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> "RelationSchema":
        try:
            raw = json.loads(read_text(path))
        except (OSError, json.JSONDecodeError) as exc:
            raise KnowlmError(f"cannot read relation schema {path}: {exc}") from None
        relations = raw.get("relations", raw) if isinstance(raw, dict) else None
        if not isinstance(relations, dict):
            raise KnowlmError(f"{path}: expected {{\"relations\": {{name: {{head_types, tail_types}}}}}}")
        schema = cls()
        for name, spec in relations.items():
            spec = spec or {}
            schema.head_types[name] = set(spec.get("head_types") or [])
            schema.tail_types[name] = set(spec.get("tail_types") or [])
            if spec.get("description"):
                schema.descriptions[name] = spec["description"]
        return schema

    def allows(self, relation: str, head_type: str, tail_type: str) -> bool:
        heads, tails = self.head_types.get(relation), self.tail_types.get(relation)
        return (not heads or head_type in heads) and (not tails or tail_type in tails)


class KnowledgeGraph:
    """Entities by id, every alias's candidate entities, and edges between entity pairs."""

    def __init__(self) -> None:
        self.entities: dict[str, Entity] = {}
        self.edges: dict[tuple[str, str], list[str]] = defaultdict(list)  # (head, tail) -> relations
        self.neighbours: dict[str, set[str]] = defaultdict(set)
        self.relation_counts: dict[str, int] = defaultdict(int)

    @classmethod
    def load(cls, paths: Iterable[str | Path], relation_map: dict[str, str | None] | None = None) -> "KnowledgeGraph":
        graph = cls()
        triples: list[tuple[str, str, str, str]] = []
        for path in paths:
            with open_text(path) as handle:
                for lineno, line in enumerate(handle, 1):
                    if line.strip():
                        graph._read_line(line, f"{path}:{lineno}", triples)
        for head, relation, tail, where in triples:
            for end in (head, tail):
                if end not in graph.entities:
                    raise KnowlmError(f"{where}: triple refers to unknown entity id {end!r}")
            if relation_map is not None and relation in relation_map:
                relation = relation_map[relation]
                if relation is None:
                    continue
            graph.add_edge(head, relation, tail)
        return graph

    def _read_line(self, line: str, where: str, triples: list) -> None:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KnowlmError(f"{where}: invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise KnowlmError(f"{where}: expected a JSON object")
        if {"head", "relation", "tail"} <= row.keys():
            if not all(isinstance(row[k], str) and row[k] for k in ("head", "relation", "tail")):
                raise KnowlmError(f"{where}: head, relation and tail must be non-empty strings")
            triples.append((row["head"], row["relation"], row["tail"], where))
        elif "id" in row and "name" in row:
            aliases = row.get("aliases") or []
            if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
                raise KnowlmError(f"{where}: aliases must be a list of strings")
            if row["id"] in self.entities:
                raise KnowlmError(f"{where}: duplicate entity id {row['id']!r}")
            names = tuple(dict.fromkeys(a.strip() for a in [row["name"], *aliases] if a and a.strip()))
            self.entities[row["id"]] = Entity(row["id"], row["name"], str(row.get("type") or ""), names)
        else:
            raise KnowlmError(f"{where}: neither an entity (id, name, type, aliases) nor a triple (head, relation, tail)")

    def add_edge(self, head: str, relation: str, tail: str) -> None:
        if relation not in self.edges[(head, tail)]:
            self.edges[(head, tail)].append(relation)
            self.neighbours[head].add(tail)
            self.neighbours[tail].add(head)
            self.relation_counts[relation] += 1

    def relations(self) -> list[str]:
        return sorted(self.relation_counts)


def load_relation_map(path: str | Path | None) -> dict[str, str | None] | None:
    """``{"old name": "new name" | null}``: rename/merge relations (null drops one)."""
    if path is None:
        return None
    try:
        mapping = json.loads(read_text(path))
    except (OSError, json.JSONDecodeError) as exc:
        raise KnowlmError(f"cannot read relation map {path}: {exc}") from None
    if not isinstance(mapping, dict):
        raise KnowlmError(f"{path}: a relation map is a JSON object {{old: new}}")
    return mapping
