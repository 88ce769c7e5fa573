"""Preference pairs for DPO/ORPO: one prompt, a chosen and a rejected answer.

Records are JSONL/JSON in the alpaca preference layout LLaMA-Factory reads
(``instruction``, ``input``, ``chosen``, ``rejected``, optional ``system``/``history``) or TRL's
(``prompt``, ``chosen``, ``rejected``). Both answers are tokenized exactly like SFT answers
(same template, one EOS, prompt masked), so a DPO run continues an SFT run seamlessly.
A batch holds the chosen rows first and the rejected rows after them, and the reference
log-probabilities (DPO) travel with each pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from knowlm.errors import KnowlmError
from knowlm.train.batching import collate
from knowlm.train.config import parse_weighted
from knowlm.train.data_sft import _records, check_template, expand_sources, split_validation, tokenize_example


def check_pair(record: object, where: str) -> dict:
    """A preference record as ``{instruction, input, system, history, chosen, rejected}``."""
    if not isinstance(record, dict):
        raise KnowlmError(f"{where}: expected a JSON object with chosen/rejected")
    if "prompt" in record and "instruction" not in record:
        record = {**record, "instruction": record["prompt"]}
    for key in ("instruction", "chosen", "rejected"):
        if not isinstance(record.get(key), str):
            raise KnowlmError(f"{where}: field {key!r} missing or not a string (preference records need "
                              "instruction or prompt, chosen and rejected)")
    return record


@dataclass
class PairStats:
    records: int = 0
    truncated: int = 0  # pairs with an answer cut to cutoff_len
    dropped_no_answer: int = 0  # the prompt alone filled cutoff_len
    per_file: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class PairExamples:
    """Tokenized pairs of one source; ``ref`` holds reference log-probs (chosen, rejected) once computed."""

    def __init__(self, chosen: list[tuple[np.ndarray, np.ndarray]], rejected: list[tuple[np.ndarray, np.ndarray]], name: str = ""):
        self.chosen, self.rejected, self.name = chosen, rejected, name
        self.lengths = np.array([max(len(c[0]), len(r[0])) for c, r in zip(chosen, rejected)], dtype=np.int64)
        self.ref = np.zeros((len(chosen), 2), dtype=np.float64)

    def __len__(self) -> int:
        return len(self.chosen)

    def length(self, i: int) -> int:
        return int(self.lengths[i])

    def example(self, i: int):
        return self.chosen[i], self.rejected[i], self.ref[i], True

    def subset(self, indices: Iterable[int]) -> "PairExamples":
        indices = list(indices)
        return PairExamples([self.chosen[i] for i in indices], [self.rejected[i] for i in indices], self.name)


def padding_pair(pad_id: int):
    """What a process with no eval pair left feeds: counts for nothing."""
    row = (np.array([pad_id]), np.array([-100]))
    return row, row, np.zeros(2), False


def collate_pairs(rows: list[list], max_len: int, pad_id: int) -> dict:
    """Rows of one pair each -> chosen rows, then rejected rows, with ``ref_logps`` and ``pair_valid``."""
    import torch

    pairs = [row[0] for row in rows]
    batch = collate([[p[0]] for p in pairs] + [[p[1]] for p in pairs], max_len, pad_id, False)
    batch["ref_logps"] = torch.tensor(np.stack([p[2] for p in pairs]), dtype=torch.float32)
    batch["pair_valid"] = torch.tensor([bool(p[3]) for p in pairs])
    return batch


def load_pref_sets(data: list[str], tokenizer, template: str, cutoff_len: int, val_size: float, seed: int):
    """-> (train sets, weights or None, eval sets, stats), like :func:`knowlm.train.data_sft.load_sft_sets`."""
    check_template(template, tokenizer)
    pairs = parse_weighted(data)
    weights = None if pairs[0][0] is None else [w for w, _ in pairs]
    stats = PairStats()
    train, evals = [], []
    for _, source in pairs:
        chosen, rejected = [], []
        count = 0
        for file in expand_sources(source):
            for number, raw in _records(file):
                record = check_pair(raw, f"{file}:{number}")
                count += 1
                c_ids, c_labels, c_cut = tokenize_example(tokenizer, template, {**record, "output": record["chosen"]}, cutoff_len, False)
                r_ids, r_labels, r_cut = tokenize_example(tokenizer, template, {**record, "output": record["rejected"]}, cutoff_len, False)
                stats.records += 1
                if not (c_labels != -100).any() or not (r_labels != -100).any():
                    stats.dropped_no_answer += 1
                    continue
                stats.truncated += int(c_cut or r_cut)
                chosen.append((c_ids, c_labels))
                rejected.append((r_ids, r_labels))
        if count == 0:
            raise KnowlmError(f"no preference records in {source}")
        stats.per_file[source] = count
        examples = PairExamples(chosen, rejected, source)
        if len(examples) == 0:
            raise KnowlmError(f"{source}: every pair's prompt is longer than --cutoff-len {cutoff_len}")
        examples, held = split_validation(examples, val_size, seed)
        train.append(examples)
        evals += [held] if held is not None else []
    return train, weights, evals, stats
