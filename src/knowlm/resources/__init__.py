"""Bundled sample data: a bilingual (zh/en) encyclopedic corpus, a knowledge graph over its
entities with a relation schema, a hand-annotated relation gold set, and a few hand-written
IE instructions. Used by the demo, the tests and the benchmarks."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Iterator

_ROOT = Path(str(resources.files(__name__)))


def path(name: str) -> Path:
    """Absolute path of a bundled file, e.g. ``path("corpus.jsonl")``."""
    return _ROOT / name


def corpus_path() -> Path:
    return path("corpus.jsonl")


def kg_path() -> Path:
    return path("kg.jsonl")


def kg_schema_path() -> Path:
    return path("kg_schema.json")


def kg_gold_path() -> Path:
    return path("kg_gold.jsonl")


def kg_rules_path() -> Path:
    """Per-relation trigger-word rules for distant supervision over the bundled graph."""
    return path("kg_rules.yaml")


def iter_corpus(lang: str | None = None) -> Iterator[dict]:
    """Documents of the bundled corpus (``{"id", "title", "lang", "text"}``), optionally one language."""
    with corpus_path().open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                doc = json.loads(line)
                if lang is None or doc.get("lang") == lang:
                    yield doc
