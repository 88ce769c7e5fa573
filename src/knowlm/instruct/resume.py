"""Resumable generation: finished units of work are appended (and fsynced) to ``OUT.partial``.

Each unit (a self-instruct round, a batch of back-translated texts) writes its records followed by
one ``{"__done__": key}`` marker in a single write. On a re-run, units with a marker are skipped and
their records reused; records of a unit cut short by a crash have no marker and are dropped, so
that unit is simply redone. When everything is done the records are written atomically to ``OUT``
and the partial file is removed. A header line pins the settings: resuming with different ones
is refused instead of silently mixing two runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from knowlm.errors import KnowlmError
from knowlm.utils.jsonl import write_jsonl

_UNIT = "__unit__"


class PartialLog:
    def __init__(self, output: str | Path, fingerprint: dict):
        self.output = Path(output)
        self.path = self.output.with_name(self.output.name + ".partial")
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
        self.done: list[str] = []
        self._done_keys: set[str] = set()
        self.records: list[dict] = []
        self.torn_lines = 0  # lines of unfinished units or cut mid-write, dropped on resume
        if self.path.exists():
            self._load()
        else:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            self._append([{"__config__": self.fingerprint}])

    @property
    def resumed(self) -> bool:
        return bool(self.done)

    def _load(self) -> None:
        pending: dict[str, list[dict]] = {}
        header = None
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    self.torn_lines += 1
                    continue
                if not isinstance(row, dict):
                    self.torn_lines += 1
                elif "__config__" in row:
                    header = row["__config__"]
                elif "__done__" in row:
                    key = str(row["__done__"])
                    self.done.append(key)
                    self._done_keys.add(key)
                    self.records += pending.pop(key, [])
                else:
                    pending.setdefault(str(row.get(_UNIT)), []).append(row)
        self.torn_lines += sum(len(rows) for rows in pending.values())
        if header is not None and header != self.fingerprint:
            changed = sorted(k for k in set(header) | set(self.fingerprint) if header.get(k) != self.fingerprint.get(k))
            raise KnowlmError(f"{self.path} holds a partial run with other settings ({', '.join(changed)}); "
                              "re-run with the same settings to resume, or delete it to start over")

    def is_done(self, key: str) -> bool:
        return key in self._done_keys

    def commit(self, key: str, records: list[dict]) -> None:
        """Record one finished unit durably: its records then its marker, one write, fsynced."""
        rows = [{**r, _UNIT: key} for r in records] + [{"__done__": key}]
        self._append(rows)
        self.done.append(key)
        self._done_keys.add(key)
        self.records += [{**r, _UNIT: key} for r in records]

    def _append(self, rows: list[dict]) -> None:
        data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def finish(self, order: list[str] | None = None) -> int:
        """Write every committed record to the output atomically and drop the partial file.
        ``order``: unit keys in the order their records should appear (default: commit order)."""
        records = self.records
        if order is not None:
            rank = {key: i for i, key in enumerate(order)}
            records = sorted(records, key=lambda r: rank.get(r[_UNIT], len(rank)))  # stable within a unit
        count = write_jsonl(self.output, ({k: v for k, v in r.items() if k != _UNIT} for r in records))
        self.path.unlink(missing_ok=True)
        return count
