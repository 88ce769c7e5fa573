"""Instruction-tuning examples: alpaca records -> (input ids, labels masked over the prompt).

The prompt is rendered by the shared template registry, i.e. it is byte for byte the text
inference sends; the answer is the record's ``output`` followed by EOS. Labels are -100 over the
prompt unless ``train_on_inputs``. Truncation to ``cutoff_len`` is counted, never silent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from knowlm.errors import KnowlmError
from knowlm.models import templates
from knowlm.train.config import parse_weighted
from knowlm.utils.jsonl import iter_jsonl

DATA_SUFFIXES = (".jsonl", ".json", ".jsonl.gz")


@dataclass
class SFTStats:
    """What tokenization did to the data; printed and saved in the run summary."""

    records: int = 0
    truncated: int = 0  # longer than cutoff_len, cut
    dropped_no_answer: int = 0  # prompt alone filled cutoff_len: nothing left to learn from
    tokens: int = 0
    label_tokens: int = 0
    per_file: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


class TokenizedExamples:
    """Examples of one source, tokenized once and kept as compact int32 arrays."""

    def __init__(self, ids: list[np.ndarray], labels: list[np.ndarray], name: str = ""):
        self.ids = ids
        self.labels = labels
        self.name = name
        self.lengths = np.array([len(x) for x in ids], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def length(self, i: int) -> int:
        return int(self.lengths[i])

    def example(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.ids[i], self.labels[i]

    def subset(self, indices: Iterable[int]) -> "TokenizedExamples":
        indices = list(indices)
        return TokenizedExamples([self.ids[i] for i in indices], [self.labels[i] for i in indices], self.name)


def expand_sources(path: str) -> list[Path]:
    """A file, or every ``*.json``/``*.jsonl`` file of a folder (sorted)."""
    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(DATA_SUFFIXES))
        if not files:
            raise KnowlmError(f"no .json/.jsonl files in data folder {p}")
        return files
    if not p.is_file():
        raise KnowlmError(f"data file not found: {p}")
    return [p]


def _records(path: Path) -> Iterable[tuple[int, dict]]:
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise KnowlmError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, list):
            raise KnowlmError(f"{path}: a .json data file must hold a list of records")
        yield from enumerate(data, 1)
        return
    for lineno, record in enumerate(iter_jsonl(path, strict=True), 1):
        yield lineno, record


def check_record(record: object, where: str) -> dict:
    """An alpaca record with string fields, or a KnowlmError naming the place."""
    if not isinstance(record, dict):
        raise KnowlmError(f"{where}: expected a JSON object with instruction/input/output")
    for key in ("instruction", "output"):
        if not isinstance(record.get(key), str):
            raise KnowlmError(f"{where}: field {key!r} missing or not a string")
    for key in ("input", "system"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise KnowlmError(f"{where}: field {key!r} must be a string")
    history = record.get("history") or []
    if not isinstance(history, list) or not all(
        isinstance(t, (list, tuple)) and len(t) == 2 and all(isinstance(x, str) for x in t) for t in history
    ):
        raise KnowlmError(f"{where}: 'history' must be a list of [user, assistant] string pairs")
    return record


def load_records(path: str) -> list[dict]:
    """All records of a file or folder, validated."""
    records = []
    for file in expand_sources(path):
        for number, record in _records(file):
            records.append(check_record(record, f"{file}:{number}"))
    if not records:
        raise KnowlmError(f"no instruction records in {path}")
    return records


def tokenize_example(tokenizer, template: str, record: dict, cutoff_len: int, train_on_inputs: bool):
    """-> (ids, labels, truncated) with labels -100 exactly over the rendered prompt."""
    prompt, answer = templates.render_training_example(
        template,
        record["instruction"],
        record.get("input") or "",
        record["output"],
        record.get("system"),
        record.get("history") or (),
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    full_ids = tokenizer(prompt + answer, add_special_tokens=True)["input_ids"]
    if full_ids[: len(prompt_ids)] == prompt_ids:
        answer_ids = full_ids[len(prompt_ids):]
    else:  # the tokenizer merged across the boundary: keep the prompt exactly as inference sees it
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = list(prompt_ids) + list(answer_ids) + [tokenizer.eos_token_id]
    labels = list(ids) if train_on_inputs else [-100] * len(prompt_ids) + ids[len(prompt_ids):]
    truncated = len(ids) > cutoff_len
    return np.asarray(ids[:cutoff_len], dtype=np.int32), np.asarray(labels[:cutoff_len], dtype=np.int32), truncated


def tokenize_records(tokenizer, records: list[dict], template: str, cutoff_len: int, train_on_inputs: bool,
                     stats: SFTStats, name: str = "") -> TokenizedExamples:
    ids, labels = [], []
    for record in records:
        x, y, truncated = tokenize_example(tokenizer, template, record, cutoff_len, train_on_inputs)
        stats.records += 1
        if not (y != -100).any():
            stats.dropped_no_answer += 1
            continue
        stats.truncated += int(truncated)
        stats.tokens += len(x)
        stats.label_tokens += int((y != -100).sum())
        ids.append(x)
        labels.append(y)
    return TokenizedExamples(ids, labels, name)


def load_sft_sets(data: list[str], tokenizer, template: str, cutoff_len: int, train_on_inputs: bool,
                  val_size: float, seed: int):
    """-> (train sets, weights or None, eval sets, stats). Validation examples come from every source."""
    templates.get(template)  # unknown template: clear error before any work
    pairs = parse_weighted(data)
    weights = None if pairs[0][0] is None else [w for w, _ in pairs]
    stats = SFTStats()
    train, evals = [], []
    for _, source in pairs:
        records = load_records(source)
        stats.per_file[source] = len(records)
        examples = tokenize_records(tokenizer, records, template, cutoff_len, train_on_inputs, stats, source)
        if len(examples) == 0:
            raise KnowlmError(f"{source}: every example's prompt is longer than --cutoff-len {cutoff_len}")
        held = int(val_size) if val_size >= 1 else int(round(len(examples) * val_size))
        held = min(held, len(examples) - 1)
        if held > 0:
            order = np.random.default_rng([seed, 7]).permutation(len(examples))
            evals.append(examples.subset(sorted(order[:held])))
            examples = examples.subset(sorted(order[held:]))
        train.append(examples)
    return train, weights, evals, stats
