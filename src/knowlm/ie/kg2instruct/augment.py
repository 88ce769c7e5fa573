"""KG-driven augmentation: short passages written from the graph's triples with sentence templates.

A corpus of a few hundred documents states each relation in only a few ways; a small model tuned
on it learns those sentences rather than how to extract. Each passage here states one to three
facts about an entity with randomly chosen templates (``resources/kg_templates.yaml``), joins
facts about one subject into one sentence now and then, names entities by their canonical name
or an alias, and sometimes continues with a fact about an entity just mentioned. Later mentions
of the subject use its short alias, as real text does, so the model also learns to answer with
the full name written earlier in its input.

With ``swap`` > 0, that share of sentences states the facts of another entity of the same type
(``Marie Curie was born in Sydney``): counterfactual passages that can only be answered by reading
the text, which is what extraction is. Triples passed in ``exclude`` (those of held-out
documents) are never stated, true or swapped.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from pathlib import Path

import yaml

from knowlm.errors import KnowlmError
from knowlm.ie.kg2instruct.graph import KnowledgeGraph
from knowlm.ie.kg2instruct.records import Fact, Span

Templates = dict[str, dict[str, list[str]]]  # lang -> relation -> ["{head} ... {tail}."]
JOIN = {"en": (", and ", " and "), "zh": ("，",)}
END = {"en": ".", "zh": "。"}


def load_templates(path: str | Path) -> Templates:
    """``{lang: {relation: [template, ...]}}``; every template names ``{head}`` and ``{tail}`` once."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise KnowlmError(f"cannot read templates {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise KnowlmError(f"{path}: expected {{lang: {{relation: [templates]}}}}")
    templates: Templates = {}
    for lang, relations in raw.items():
        if lang not in END or not isinstance(relations, dict):
            raise KnowlmError(f"{path}: top-level keys are languages (zh, en), each a mapping of relation -> templates")
        for relation, items in relations.items():
            if not isinstance(items, list) or not items:
                raise KnowlmError(f"{path}: {lang}/{relation}: expected a non-empty list of templates")
            for item in items:
                if not isinstance(item, str) or item.count("{head}") != 1 or item.count("{tail}") != 1:
                    raise KnowlmError(f"{path}: {lang}/{relation}: each template needs {{head}} and {{tail}} once: {item!r}")
        templates[lang] = {str(k): list(v) for k, v in relations.items()}
    return templates


class PassageWriter:
    """Writes passages from the graph's usable triples; deterministic for a seed."""

    def __init__(self, graph: KnowledgeGraph, templates: Templates, exclude: set[tuple[str, str, str]], seed: int = 0,
                 swap: float = 0.0):
        self.graph = graph
        self.templates = templates
        self.exclude = exclude
        self.swap = swap
        self.lengths = (1, 1, 2, 2, 3, 4, 5)  # sentences per passage: mostly short, some document-like
        self.lang_of = {rel: lang for lang, rels in templates.items() for rel in rels}
        self.facts: dict[str, list[tuple[str, str]]] = defaultdict(list)  # head id -> [(relation, tail id)]
        for (head, tail), relations in sorted(graph.edges.items()):
            for relation in relations:
                if relation in self.lang_of and (head, relation, tail) not in exclude:
                    self.facts[head].append((relation, tail))
        self.heads = sorted(self.facts)
        if not self.heads:
            raise KnowlmError("augmentation: no graph triple has a template (or all are held out)")
        self.same_type: dict[str, list[str]] = defaultdict(list)
        for head in self.heads:
            self.same_type[graph.entities[head].type].append(head)
        self.rng = random.Random(f"augment:{seed}")

    def _surface(self, entity: str, first: bool) -> str:
        e = self.graph.entities[entity]
        others = [a for a in e.aliases if a != e.name]
        if others and self.rng.random() < (0.15 if first else 0.6):
            return self.rng.choice(others)
        return e.name

    def _options(self, subject: str, lang: str, used: set) -> list[tuple[str, str]]:
        """Facts to state about ``subject``: its own, or (with probability ``swap``) those of another
        entity of its type, so that the text, not a remembered fact, decides the answer."""
        donor = subject
        if self.swap and self.rng.random() < self.swap:
            donor = self.rng.choice(self.same_type[self.graph.entities[subject].type])
        return [(r, t) for r, t in self.facts.get(donor, []) if self.lang_of[r] == lang and t != subject
                and (subject, r, t) not in used and (subject, r, t) not in self.exclude]

    def passage(self, lang: str | None = None) -> tuple[str, str, list[Fact], list[Span]]:
        """(lang, text, facts, spans) of one passage of one to three sentences about a subject."""
        rng = self.rng
        heads = [h for h in self.heads if lang is None or self.lang_of[self.facts[h][0][0]] == lang]
        subject = rng.choice(heads or self.heads)
        lang = self.lang_of[self.facts[subject][0][0]]
        text = _Text()
        facts: list[Fact] = []
        mentioned: set[str] = set()
        used: set[tuple[str, str, str]] = set()
        for index in range(rng.choice(self.lengths)):
            options = self._options(subject, lang, used)
            if not options:
                break
            if index and lang == "en":
                text.add(" ")
            chosen = rng.sample(options, min(len(options), rng.choice((1, 1, 2))))
            first = rng.choice(self.templates[lang][chosen[0][0]])
            if len(chosen) > 1 and not first.startswith("{head}"):
                chosen = chosen[:1]
            head = None
            for k, (relation, tail) in enumerate(chosen):
                template = first if k == 0 else rng.choice([t for t in self.templates[lang][relation] if t.startswith("{head}")] or [""])
                if not template:
                    break
                if k:  # another fact about the same subject: a clause joined to the sentence
                    text.add(rng.choice(JOIN[lang]))
                    template = template[len("{head}"):].lstrip()
                template = template.rstrip(".。")
                head_text = self._surface(subject, subject not in mentioned)
                tail_text = self._surface(tail, tail not in mentioned)
                spans = text.render(template, {"head": (subject, head_text), "tail": (tail, tail_text)})
                head = spans.get("head", head)
                facts.append(Fact(head, relation, spans["tail"]))
                mentioned.update((subject, tail))
                used.add((subject, relation, tail))
            if not text.text.endswith(END[lang]):  # "Washington, D.C." ends the sentence itself
                text.add(END[lang])
            # sometimes go on about an entity just named (Warsaw after "born in Warsaw")
            tails = [f.tail.entity for f in facts if f.tail.entity in self.facts]
            if tails and rng.random() < 0.35:
                subject = rng.choice(tails)
        return lang, text.text, facts, text.spans


class _Text:
    """A passage under construction: appended pieces, with the entity spans it contains."""

    def __init__(self) -> None:
        self.text = ""
        self.spans: list[Span] = []

    def add(self, piece: str) -> None:
        self.text += piece

    def render(self, template: str, slots: dict[str, tuple[str, str]]) -> dict[str, Span]:
        """Append ``template`` with ``{head}``/``{tail}`` filled by (entity, surface); their spans."""
        found: dict[str, Span] = {}
        for part in re.split(r"(\{head\}|\{tail\})", template):
            name = part[1:-1] if part in ("{head}", "{tail}") else None
            if name is None:
                self.add(part)
                continue
            entity, surface = slots[name]
            span = Span(entity, surface, len(self.text))
            self.spans.append(span)
            found[name] = span
            self.add(surface)
        return found
