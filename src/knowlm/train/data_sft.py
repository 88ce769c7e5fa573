"""Instruction-tuning examples: alpaca records -> (input ids, labels masked over the prompt).

The prompt is rendered by the shared template registry (or the tokenizer's chat template), i.e.
it is byte for byte the text inference sends; the answer is the record's ``output`` followed by
one EOS. Multi-turn records (alpaca ``history`` or chat ``messages``) are trained on every
assistant turn unless ``mask_history``. Labels are -100 over the prompt unless
``train_on_inputs``. Truncation to ``cutoff_len`` is counted, never silent.
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


ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "system": "system"}


def _from_messages(messages: object, where: str) -> dict:
    """An OpenAI ``messages`` / ShareGPT ``conversations`` list as an alpaca record with history."""
    if not isinstance(messages, list) or not messages:
        raise KnowlmError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    turns = []
    for m in messages:
        if not isinstance(m, dict):
            raise KnowlmError(f"{where}: every message must be an object with role and content")
        role = ROLES.get(str(m.get("role", m.get("from", ""))))
        content = m.get("content", m.get("value"))
        if role is None or not isinstance(content, str):
            raise KnowlmError(f"{where}: message role must be system/user/assistant and content a string")
        turns.append((role, content))
    system = turns.pop(0)[1] if turns[0][0] == "system" else None
    if len(turns) < 2 or len(turns) % 2 or any(r != ("user", "assistant")[i % 2] for i, (r, _) in enumerate(turns)):
        raise KnowlmError(f"{where}: messages must alternate user/assistant and end with an assistant answer")
    pairs = [(turns[i][1], turns[i + 1][1]) for i in range(0, len(turns), 2)]
    return {"instruction": pairs[-1][0], "input": "", "output": pairs[-1][1], "system": system,
            "history": [list(p) for p in pairs[:-1]]}


def check_record(record: object, where: str) -> dict:
    """An alpaca record with string fields (or a chat ``messages`` list), or a KnowlmError naming the place."""
    if isinstance(record, dict) and ("messages" in record or "conversations" in record):
        return _from_messages(record.get("messages", record.get("conversations")), where)
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


def _sentinel(i: int | str) -> str:
    return f"\ue000{i}\ue001"  # private-use characters: never in real text, kept verbatim by templates


def conversation_segments(tokenizer, template: str, record: dict, mask_history: bool = False) -> list[tuple[str, bool]]:
    """The rendered record as ``(text, trained)`` pieces whose concatenation is the training text.

    The prompt is exactly what inference renders. Each earlier assistant answer (with the
    template's end-of-turn text, e.g. `` </s>`` or ``<|im_end|>``) is trained too unless
    ``mask_history``; the final answer always is. Answers are located by rendering them as
    sentinels, so any template -- including a tokenizer's Jinja chat template -- works.
    """
    t = templates.get(template)
    history = [tuple(h) for h in record.get("history") or ()]
    marked = [(q, _sentinel(i)) for i, (q, _) in enumerate(history)]
    args = (record["instruction"], record.get("input") or "", record.get("system"))
    if t.uses_tokenizer:
        system = args[2]
        messages = templates.chat_messages(args[0], args[1], system, marked)
        prompt = templates.render_chat_template(tokenizer, messages)
        closed = templates.render_chat_template(tokenizer, messages + [{"role": "assistant", "content": _sentinel("F")}], False)
        turn_end = closed.split(_sentinel("F"), 1)[-1].rstrip()
        final = [(record["output"] + turn_end, True)]
    else:
        prompt = t.render(*args, marked)
        turn_end = t.turn_end
        final = [(record["output"], True)]
    segments: list[tuple[str, bool]] = []
    rest = prompt
    for i, (_, answer) in enumerate(history):
        before, found, rest = rest.partition(_sentinel(i))
        if not found:
            raise KnowlmError(f"template {template!r} does not render the conversation's turn {i + 1}")
        end = turn_end if turn_end and rest.startswith(turn_end) else ""
        rest = rest[len(end):]
        segments += [(before, False), (answer + end, not mask_history)]
    return segments + [(rest, False)] + final


def _prompt_tokens(tokenizer, segments: list[tuple[str, bool]]) -> tuple[list[int], list[bool]]:
    """The prompt tokenized as one text (exactly as inference does), each token marked trained when
    it overlaps a trained piece (an earlier assistant answer)."""
    text = "".join(piece for piece, _ in segments)
    spans, at = [], 0
    for piece, train in segments:
        if train:
            spans.append((at, at + len(piece)))
        at += len(piece)
    if not spans:
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        return ids, [False] * len(ids)
    try:
        encoded = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    except NotImplementedError:  # a slow tokenizer: grow the text piece by piece instead
        return tokenize_segments(tokenizer, segments)
    trained = [any(lo < b and a < hi for a, b in spans) for lo, hi in encoded["offset_mapping"]]
    return list(encoded["input_ids"]), trained


def tokenize_segments(tokenizer, segments: list[tuple[str, bool]]) -> tuple[list[int], list[bool]]:
    """Token ids of the concatenated text and whether each is trained, one piece at a time.

    Each prefix is tokenized as a whole, so the ids are those of the full text whenever the
    tokenizer does not merge across a boundary; otherwise the new piece is tokenized on its own,
    which keeps what came before exactly as it was (the prompt as inference tokenizes it).
    """
    ids: list[int] = []
    trained: list[bool] = []
    text = ""
    for piece, train in segments:
        if not piece:
            continue
        text += piece
        full = tokenizer(text, add_special_tokens=True)["input_ids"]
        new = full[len(ids):] if full[:len(ids)] == ids else tokenizer(piece, add_special_tokens=False)["input_ids"]
        ids += new
        trained += [train] * len(new)
    return ids, trained


def tokenize_example(tokenizer, template: str, record: dict, cutoff_len: int, train_on_inputs: bool,
                     mask_history: bool = False):
    """-> (ids, labels, truncated) with labels -100 exactly over the rendered prompt (and masked turns).

    The answer ends with one EOS: none is added when the answer already ends with it (a literal
    ``</s>``), as KnowLM's ``generate_and_tokenize_prompt`` does. Chat templates end the answer with
    their own end-of-turn text instead.
    """
    segments = conversation_segments(tokenizer, template, record, mask_history)
    prompt_ids, prompt_trained = _prompt_tokens(tokenizer, segments[:-1])
    ids, trained = tokenize_segments(tokenizer, [("".join(p for p, _ in segments[:-1]), False), segments[-1]])
    if ids[:len(prompt_ids)] == prompt_ids:
        trained[:len(prompt_ids)] = prompt_trained
    eos = tokenizer.eos_token_id
    if not templates.get(template).uses_tokenizer and eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
        trained.append(True)
    labels = list(ids) if train_on_inputs else [i if t else -100 for i, t in zip(ids, trained)]
    truncated = len(ids) > cutoff_len
    return np.asarray(ids[:cutoff_len], dtype=np.int32), np.asarray(labels[:cutoff_len], dtype=np.int32), truncated


def tokenize_records(tokenizer, records: list[dict], template: str, cutoff_len: int, train_on_inputs: bool,
                     stats: SFTStats, name: str = "", mask_history: bool = False) -> TokenizedExamples:
    ids, labels = [], []
    for record in records:
        x, y, truncated = tokenize_example(tokenizer, template, record, cutoff_len, train_on_inputs, mask_history)
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


def check_template(template: str, tokenizer) -> None:
    """An unknown template, or ``chat_template`` with a tokenizer that has none: a clear error before any work."""
    if templates.get(template).uses_tokenizer:
        templates.render(template, "x", tokenizer=tokenizer)


def split_validation(examples, val_size: float, seed: int):
    """(train, held-out or None): ``val_size`` examples (a count >= 1, or a fraction), at least one left to train."""
    held = min(int(val_size) if val_size >= 1 else int(round(len(examples) * val_size)), len(examples) - 1)
    if held <= 0:
        return examples, None
    order = np.random.default_rng([seed, 7]).permutation(len(examples))
    return examples.subset(sorted(order[held:])), examples.subset(sorted(order[:held]))


def load_sft_sets(data: list[str], tokenizer, template: str, cutoff_len: int, train_on_inputs: bool,
                  val_size: float, seed: int, mask_history: bool = False):
    """-> (train sets, weights or None, eval sets, stats). Validation examples come from every source."""
    check_template(template, tokenizer)
    pairs = parse_weighted(data)
    weights = None if pairs[0][0] is None else [w for w, _ in pairs]
    stats = SFTStats()
    train, evals = [], []
    for _, source in pairs:
        records = load_records(source)
        stats.per_file[source] = len(records)
        examples = tokenize_records(tokenizer, records, template, cutoff_len, train_on_inputs, stats, source, mask_history)
        if len(examples) == 0:
            raise KnowlmError(f"{source}: every example's prompt is longer than --cutoff-len {cutoff_len}")
        examples, held = split_validation(examples, val_size, seed)
        train.append(examples)
        evals += [held] if held is not None else []
    return train, weights, evals, stats
