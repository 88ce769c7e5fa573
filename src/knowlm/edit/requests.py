"""Edit requests: what to change, and the prompts that measure whether it changed.

Accepted as JSON (a list, or ``{"requests": [...]}``) or JSONL. Field names follow EasyEdit so its
data files load as they are: ``prompt``, ``subject``, ``target_new``, optional ``ground_truth``,
``rephrase_prompts`` (or ``rephrase_prompt``), ``locality`` and ``portability`` (lists of
``{"prompt", "answer"}``, or EasyEdit's ``{name: {"prompt": [...], "ground_truth": [...]}}``).
A prompt may contain ``{}`` for the subject (CounterFact style).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from knowlm.errors import KnowlmError


@dataclass
class Probe:
    """A prompt and the answer expected after it (locality or portability check)."""

    prompt: str
    answer: str


@dataclass
class EditRequest:
    prompt: str
    subject: str
    target_new: str
    ground_truth: str | None = None
    rephrase_prompts: list[str] = field(default_factory=list)
    locality: list[Probe] = field(default_factory=list)
    portability: list[Probe] = field(default_factory=list)
    case_id: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _probes(value: Any, where: str, name: str) -> list[Probe]:
    """Normalise the accepted spellings of locality/portability into a list of probes."""
    if value is None:
        return []
    items: list[tuple[Any, Any]] = []
    if isinstance(value, dict) and not {"prompt"} <= set(value):
        # EasyEdit: {"neighborhood": {"prompt": [...], "ground_truth": [...]}, ...}
        for group in value.values():
            if not isinstance(group, dict):
                raise KnowlmError(f"{where}: {name} groups must be objects with prompt and ground_truth")
            prompts, answers = group.get("prompt"), group.get("ground_truth", group.get("answer"))
            if isinstance(prompts, str):
                prompts, answers = [prompts], [answers]
            items.extend(zip(prompts or [], answers or []))
    else:
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                items.append((item.get("prompt"), item.get("answer", item.get("ground_truth", item.get("target")))))
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                items.append((item[0], item[1]))
            else:
                raise KnowlmError(f"{where}: each {name} entry needs a prompt and an answer")
    probes = []
    for prompt, answer in items:
        if isinstance(answer, list):  # EasyEdit allows a list of acceptable answers; we score the first
            answer = answer[0] if answer else None
        if not isinstance(prompt, str) or not prompt.strip() or not isinstance(answer, str) or not answer.strip():
            raise KnowlmError(f"{where}: each {name} entry needs a non-empty prompt and answer")
        probes.append(Probe(prompt, answer))
    return probes


def make_request(record: dict, where: str = "request") -> EditRequest:
    """Validate one record; every problem is a one-line KnowlmError naming the request."""
    if not isinstance(record, dict):
        raise KnowlmError(f"{where}: expected a JSON object")
    prompt, subject = record.get("prompt"), record.get("subject")
    target = record.get("target_new")
    if isinstance(target, dict):  # CounterFact: {"str": "..."}
        target = target.get("str")
    if not isinstance(prompt, str) or not prompt.strip():
        raise KnowlmError(f"{where}: 'prompt' is missing or empty")
    if not isinstance(subject, str) or not subject.strip():
        raise KnowlmError(f"{where}: 'subject' is missing or empty")
    if not isinstance(target, str) or not target.strip():
        raise KnowlmError(f"{where}: 'target_new' is missing or empty")
    if "{}" in prompt:
        prompt = prompt.format(subject)
    if subject not in prompt:
        raise KnowlmError(f"{where}: subject {subject!r} does not occur in prompt {prompt!r}")
    rephrases = record.get("rephrase_prompts", record.get("rephrase_prompt", []))
    if isinstance(rephrases, str):
        rephrases = [rephrases]
    if not isinstance(rephrases, list) or not all(isinstance(r, str) and r.strip() for r in rephrases):
        raise KnowlmError(f"{where}: 'rephrase_prompts' must be a list of non-empty strings")
    truth = record.get("ground_truth")
    if isinstance(truth, dict):
        truth = truth.get("str")
    if isinstance(truth, list):
        truth = truth[0] if truth else None
    return EditRequest(
        prompt=prompt,
        subject=subject,
        target_new=target.strip(),
        ground_truth=truth if isinstance(truth, str) and truth.strip() else None,
        rephrase_prompts=list(rephrases),
        locality=_probes(record.get("locality"), where, "locality"),
        portability=_probes(record.get("portability"), where, "portability"),
        case_id=str(record["case_id"]) if record.get("case_id") is not None else None,
    )


def make_requests(records: Iterable[dict | EditRequest]) -> list[EditRequest]:
    out = []
    for index, record in enumerate(records):
        out.append(record if isinstance(record, EditRequest) else make_request(record, f"request {index + 1}"))
    if not out:
        raise KnowlmError("no edit requests given")
    return out


def load_requests(path: str | Path) -> list[EditRequest]:
    """Read and validate a requests file (.json or .jsonl)."""
    path = Path(path)
    if not path.is_file():
        raise KnowlmError(f"requests file not found: {path}")
    text = path.read_text(encoding="utf-8")
    records: list = []
    try:
        data = json.loads(text)
        records = data.get("requests", [data]) if isinstance(data, dict) else data
    except json.JSONDecodeError:
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise KnowlmError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(records, list):
        raise KnowlmError(f"{path}: expected a list of edit requests")
    out = []
    for index, record in enumerate(records):
        out.append(make_request(record, f"{path.name}: request {index + 1}"))
    if not out:
        raise KnowlmError(f"{path}: no edit requests")
    return out
