"""Edit requests: what to change, and the prompts that measure whether it changed.

A request is ``prompt`` (may contain ``{}`` for the subject, CounterFact style), ``subject``,
``target_new``, optional ``ground_truth``, ``rephrase_prompts`` (or EasyEdit's ``rephrase_prompt``)
and probes. Probes accept every spelling EasyEdit and KnowEdit use:

- a list of ``{"prompt", "answer"}`` (or ``ground_truth``/``target``) or of ``[prompt, answer]``;
- EasyEdit's call form ``{category: {"prompt": [...], "ground_truth": [...]}}``;
- KnowEdit's ``{category: [{"prompt": ..., "ground_truth": [["Berlin", "Berlin, Germany"], ...]}]}``,
  where an answer may be a string, a list of aliases, or a list of alias lists (several answers);
- EasyEdit's flat ``locality_prompt``/``locality_ground_truth`` (and ``portability_*``) fields.

Like EasyEdit, the first alias of the first answer is the one scored; all of them are kept.
Probes whose answer is empty are skipped (KnowEdit has a few), as EasyEdit does.
The loaders for whole dataset files (KnowEdit, ZsRE, CounterFact, MQuAKE) are in ``datasets``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from knowlm.errors import KnowlmError


@dataclass
class Probe:
    """A prompt and the answer expected after it (locality or portability check)."""

    prompt: str
    answer: str
    category: str = "default"
    aliases: list[str] = field(default_factory=list)  # every acceptable answer, ``answer`` first


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
    group: str | None = None  # requests of one group (an MQuAKE case) are edited together in mode single

    def to_dict(self) -> dict:
        return asdict(self)


def flatten_answers(value: Any) -> list[str]:
    """Every string in an answer spelling, in order: "a", ["a", "b"], [["a", "a2"], ["b"]]."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):  # CounterFact {"str": ...}
        return flatten_answers(value.get("str"))
    if isinstance(value, (list, tuple)):
        return [s for item in value for s in flatten_answers(item)]
    return []


def _pairs(prompt: Any, answer: Any) -> list[tuple[str, Any]]:
    """A probe item may hold several prompts with parallel answers, or several prompts sharing one."""
    if isinstance(prompt, list):
        if isinstance(answer, list) and len(answer) == len(prompt) and len(prompt) > 1:
            return list(zip(prompt, answer))
        return [(p, answer) for p in prompt]
    return [(prompt, answer)]


def _answer_of(item: dict) -> Any:
    for key in ("answer", "ground_truth", "target", "answers"):
        if key in item:
            return item[key]
    return None


def make_probes(value: Any, where: str, name: str, default_category: str) -> list[Probe]:
    """Normalise the accepted spellings of locality/portability into a list of probes."""
    if value is None:
        return []
    items: list[tuple[str, Any, Any]] = []  # (category, prompt, answer)
    if isinstance(value, dict) and "prompt" not in value:
        for category, group in value.items():
            if isinstance(group, dict):  # EasyEdit: {"prompt": [...], "ground_truth": [...]}
                prompts, answers = group.get("prompt"), _answer_of(group)
                if isinstance(prompts, str):
                    prompts, answers = [prompts], [answers]
                elif isinstance(prompts, list) and len(prompts) == 1 and isinstance(answers, str):
                    answers = [answers]
                if not isinstance(prompts, list) or not isinstance(answers, list) or len(prompts) != len(answers):
                    raise KnowlmError(f"{where}: {name} group {category!r} needs equally long prompt and ground_truth lists")
                items += [(category, p, a) for p, a in zip(prompts, answers)]
            elif isinstance(group, list):  # KnowEdit: [{"prompt": ..., "ground_truth": ...}, ...]
                for item in group:
                    if not isinstance(item, dict):
                        raise KnowlmError(f"{where}: {name} group {category!r} entries must be objects with prompt and ground_truth")
                    items += [(category, p, a) for p, a in _pairs(item.get("prompt"), _answer_of(item))]
            elif group is not None:
                raise KnowlmError(f"{where}: {name} group {category!r} must be a list or an object")
    else:
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                items += [(item.get("category", default_category), p, a) for p, a in _pairs(item.get("prompt"), _answer_of(item))]
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                items.append((default_category, item[0], item[1]))
            else:
                raise KnowlmError(f"{where}: each {name} entry needs a prompt and an answer")
    probes = []
    for category, prompt, answer in items:
        if not isinstance(prompt, str) or not prompt.strip():
            raise KnowlmError(f"{where}: each {name} entry needs a non-empty prompt")
        answers = [a.strip() for a in flatten_answers(answer)]
        if not answers or not answers[0]:
            continue  # EasyEdit skips probes with an empty answer
        probes.append(Probe(prompt, answers[0], str(category), [a for a in answers if a]))
    return probes


def _flat_probes(record: dict, kind: str, where: str) -> list[Probe]:
    """EasyEdit's counterfact/CKnowEdit layout: ``locality_prompt`` + ``locality_ground_truth`` (or ``_answer``)."""
    prompts = record.get(f"{kind}_prompt")
    if prompts is None:
        return []
    answers = record.get(f"{kind}_ground_truth", record.get(f"{kind}_answer"))
    if isinstance(prompts, str):
        prompts, answers = [prompts], [answers]
    if not isinstance(prompts, list) or not isinstance(answers, list) or len(prompts) != len(answers):
        raise KnowlmError(f"{where}: {kind}_prompt and {kind}_ground_truth must be equally long")
    category = "neighborhood" if kind == "locality" else "one_hop"
    return make_probes([{"prompt": p, "ground_truth": a} for p, a in zip(prompts, answers)], where, kind, category)


def make_request(record: dict, where: str = "request") -> EditRequest:
    """Validate one record; every problem is a one-line KnowlmError naming the request."""
    if not isinstance(record, dict):
        raise KnowlmError(f"{where}: expected a JSON object")
    prompt, subject = record.get("prompt"), record.get("subject")
    targets = flatten_answers(record.get("target_new"))
    target = targets[0] if targets else None
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
    rephrases = record.get("rephrase_prompts", record.get("rephrase_prompt", record.get("rephrase", [])))
    if isinstance(rephrases, str):
        rephrases = [rephrases]
    if rephrases is None:
        rephrases = []
    if not isinstance(rephrases, list) or not all(isinstance(r, str) and r.strip() for r in rephrases):
        raise KnowlmError(f"{where}: 'rephrase_prompts' must be a list of non-empty strings")
    truths = flatten_answers(record.get("ground_truth"))
    truth = truths[0].strip() if truths and truths[0].strip() else None
    locality = make_probes(record.get("locality"), where, "locality", "neighborhood") + _flat_probes(record, "locality", where)
    portability = make_probes(record.get("portability"), where, "portability", "one_hop") + _flat_probes(record, "portability", where)
    return EditRequest(
        prompt=prompt,
        subject=subject,
        target_new=target.strip(),
        ground_truth=truth,
        rephrase_prompts=[r.format(subject) if "{}" in r else r for r in rephrases],
        locality=locality,
        portability=portability,
        case_id=str(record["case_id"]) if record.get("case_id") is not None else None,
        group=str(record["group"]) if record.get("group") is not None else None,
    )


def make_requests(records: Iterable[dict | EditRequest]) -> list[EditRequest]:
    out = []
    for index, record in enumerate(records):
        out.append(record if isinstance(record, EditRequest) else make_request(record, f"request {index + 1}"))
    if not out:
        raise KnowlmError("no edit requests given")
    return out


def load_requests(path, format: str = "auto") -> list[EditRequest]:
    """Read and validate a requests file (.json or .jsonl) in any supported layout (see ``datasets``)."""
    from knowlm.edit.datasets import load_dataset_file

    return load_dataset_file(path, format)
