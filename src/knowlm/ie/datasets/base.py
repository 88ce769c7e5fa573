"""What every converter shares: the report, reading units with their ``file:line``, typed field
access, and the relation-label policy.

**Relation labels**: a converter keeps the label the dataset writes (``/people/person/nationality``
in NYT11 and GIDS, ``per:employee_of`` in kbp37, ``作曲`` in DuIE, IEPile's own names), so a
converted file scores against papers' numbers on that dataset. ``--relation-map FILE`` renames
labels afterwards, the same way for every format: a JSON object ``{label: new label}`` (a label
mapped to ``NA`` drops the relation), or a dataset's ``rel2id`` table ``{label: id}``, which
decodes numeric labels (RESIDE's GIDS bags write ``"rel": [4]``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from knowlm.errors import KnowlmError
from knowlm.ie.records import is_na
from knowlm.utils.jsonl import JsonlStats, iter_jsonl_numbered, open_text, read_text

_SHOW = 3  # locations kept per reason


class BadField(ValueError):
    """A field of the wrong type (``"spo_list": "oops"``): the unit is skipped as ``bad_field``."""


@dataclass
class ConvertReport:
    """What a conversion read and wrote: units skipped (not written) and annotations dropped
    from written records, by reason, with the first ``file:line`` of each."""

    format: str
    read: int = 0
    written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    negatives: int = 0  # records written without a relation because the dataset labels them NA
    where: dict[str, list[str]] = field(default_factory=dict)

    def _note(self, table: dict[str, int], reason: str, where: str | None, n: int) -> None:
        table[reason] = table.get(reason, 0) + n
        if where and len(self.where.setdefault(reason, [])) < _SHOW:
            self.where[reason].append(where)

    def skip(self, reason: str, where: str | None = None, n: int = 1) -> None:
        self._note(self.skipped, reason, where, n)

    def drop(self, reason: str, where: str | None = None, n: int = 1) -> None:
        self._note(self.dropped, reason, where, n)

    def _list(self, table: dict[str, int]) -> str:
        parts = []
        for reason, n in sorted(table.items()):
            places = self.where.get(reason)
            parts.append(f"{reason}: {n}" + (f" ({', '.join(places)}{', ...' if n > len(places) else ''})" if places else ""))
        return ", ".join(parts)

    def summary(self) -> str:
        text = f"{self.format}: read {self.read} units, wrote {self.written} records"
        if self.negatives:
            text += f" ({self.negatives} labelled NA, written without a relation)"
        text += f"; skipped {self._list(self.skipped) or 'nothing'}"
        if self.dropped:
            text += f"; left out of written records: {self._list(self.dropped)}"
        return text


@dataclass
class ConvertOptions:
    """Per-run settings every converter may use."""

    relation_map: dict[str, str] = field(default_factory=dict)
    relation_ids: dict[int, str] = field(default_factory=dict)


# ---------------------------------------------------------------- reading units


def json_units(path: Path, report: ConvertReport) -> Iterator[tuple[str, dict]]:
    """``(where, object)`` for each JSONL line, or each item of a top-level JSON array (some releases ship one)."""
    with open_text(path) as handle:
        head = handle.read(1 << 16).lstrip()
    if head.startswith("["):
        try:
            data = json.loads(read_text(path))
        except json.JSONDecodeError as exc:
            raise KnowlmError(f"{path}: invalid JSON array ({exc.msg} at line {exc.lineno})") from None
        for i, item in enumerate(data, 1):
            if isinstance(item, dict):
                yield f"{path} item {i}", item
            else:
                report.skip("not_an_object", f"{path} item {i}")
        return
    stats = JsonlStats()
    yield from ((f"{path}:{n}", item) for n, item in iter_jsonl_numbered(path, stats))
    for reason, n in stats.skipped.items():
        report.skipped[reason] = report.skipped.get(reason, 0) + n
    for reason in stats.skipped:
        report.where.setdefault(reason, [f"{path}:{n}" for n in stats.first_bad_lines[:_SHOW]])


def convert_units(
    units: Iterable[tuple[str, Any]], report: ConvertReport, one: Callable[[Any, str], Iterable[dict]]
) -> Iterator[dict]:
    """``one(unit, where)`` per unit; a wrong-typed field anywhere in a unit skips it as ``bad_field``
    (never a traceback, never half a record)."""
    for where, unit in units:
        report.read += 1
        try:
            records = list(one(unit, where))
        except (BadField, TypeError, AttributeError, KeyError, IndexError, ValueError):
            report.skip("bad_field", where)
            continue
        yield from records


def as_list(item: dict, key: str) -> list:
    """``item[key]`` as a list (missing or null: empty); any other type is a bad field."""
    value = item.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadField(key)
    return value


def as_dict(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise BadField(what)
    return value


def opt_str(item: dict, key: str) -> str | None:
    """``item[key]`` when a string, None when missing; any other type is a bad field."""
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadField(key)
    return value


# ---------------------------------------------------------------- relation labels


def load_relation_map(path: str | Path) -> ConvertOptions:
    """A ``--relation-map`` file: ``{label: new label}`` renames, ``{label: id}`` (rel2id) decodes ids."""
    path = Path(path)
    if not path.is_file():
        raise KnowlmError(f"relation map not found: {path}")
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise KnowlmError(f"{path}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not data:
        raise KnowlmError(f"{path}: a relation map is a JSON object {{label: new label}} or {{label: id}}")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in data.values()):
        return ConvertOptions(relation_ids={v: str(k) for k, v in data.items()})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise KnowlmError(f"{path}: relation map values must all be labels (strings) or all ids (integers)")
    return ConvertOptions(relation_map=dict(data))


def rename_relations(record: dict, options: ConvertOptions | dict | None, report: ConvertReport | None = None, where: str | None = None) -> dict:
    """Apply the relation map to a record's relations; relations renamed to NA are dropped."""
    mapping = options.relation_map if isinstance(options, ConvertOptions) else options or {}
    if not mapping or not isinstance(record.get("relations"), list):
        return record
    kept = []
    for rel in record["relations"]:
        if isinstance(rel, dict) and isinstance(rel.get("relation"), str) and rel["relation"] in mapping:
            rel = {**rel, "relation": mapping[rel["relation"]]}
            if is_na(rel["relation"]):
                if report is not None:
                    report.drop("mapped_to_na", where)
                continue
        kept.append(rel)
    record["relations"] = kept
    return record
