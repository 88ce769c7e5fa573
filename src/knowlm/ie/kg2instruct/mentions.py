"""Find every alias of every entity in a text at once (Aho-Corasick), keeping the longest
non-overlapping matches; English aliases must sit on word boundaries.

Matching ignores case by default, so "apple" and "Apple" both reach both candidate entities
and the linker decides by context (exact case only breaks ties).
"""

from __future__ import annotations

from dataclasses import dataclass

import ahocorasick

from knowlm.ie.kg2instruct.graph import KnowledgeGraph


@dataclass
class Mention:
    start: int
    end: int
    text: str
    candidates: tuple[str, ...]  # entity ids
    exact: tuple[str, ...]  # candidates whose alias matches with exact case


def _fold(text: str) -> str:
    """Lower-case without changing length, so offsets stay valid."""
    if text.isascii():
        return text.lower()
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def _wordish(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


class MentionFinder:
    def __init__(self, graph: KnowledgeGraph, ignore_case: bool = True, min_alias_len: int = 2):
        self.ignore_case = ignore_case
        table: dict[str, dict[str, set[str]]] = {}  # key -> {entity id -> exact aliases}
        for entity in graph.entities.values():
            for alias in entity.aliases:
                if len(alias) < min_alias_len and alias.isascii():
                    continue  # one-letter English aliases match everywhere
                key = _fold(alias) if ignore_case else alias
                table.setdefault(key, {}).setdefault(entity.id, set()).add(alias)
        self.automaton = ahocorasick.Automaton()
        for key, owners in table.items():
            self.automaton.add_word(key, (len(key), tuple(sorted(owners)), {e: frozenset(a) for e, a in owners.items()}))
        if table:
            self.automaton.make_automaton()
        self.size = len(table)

    def find(self, text: str) -> list[Mention]:
        if not self.size:
            return []
        haystack = _fold(text) if self.ignore_case else text
        found = []
        for end_index, (length, owners, aliases) in self.automaton.iter(haystack):
            start, end = end_index - length + 1, end_index + 1
            if _wordish(text[start]) and start > 0 and _wordish(text[start - 1]):
                continue
            if _wordish(text[end - 1]) and end < len(text) and _wordish(text[end]):
                continue
            found.append((start, end, owners, aliases))
        found.sort(key=lambda m: (m[0], -(m[1] - m[0])))  # leftmost, then longest
        mentions: list[Mention] = []
        last_end = 0
        for start, end, owners, aliases in found:
            if start < last_end:
                continue
            surface = text[start:end]
            exact = tuple(e for e in owners if surface in aliases[e])
            mentions.append(Mention(start, end, surface, owners, exact))
            last_end = end
        return mentions
