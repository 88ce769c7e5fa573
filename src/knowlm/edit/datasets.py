"""Knowledge-editing data files in their published layouts, read into :class:`EditRequest` lists.

``format="auto"`` looks at the first record:

- ``knowlm`` / EasyEdit / KnowEdit (``prompt``, ``subject``, ``target_new``, nested ``locality`` and
  ``portability`` groups, alias lists, or EasyEdit's flat ``locality_prompt``/``locality_ground_truth``);
  KnowEdit's WikiBio records (``text``, ``labels``, ``concept``) too;
- ``zsre``: MEND's layout (``src``, ``alt``, ``answers``, ``rephrase``, ``loc``, ``loc_ans``; optional
  ``portability`` with ``New Question``/``New Answer``). Records with an empty ``alt`` are skipped, as
  EasyEdit's ``ZsreDataset`` does;
- ``counterfact``: ROME's layout (``requested_rewrite`` with ``{}`` prompt, ``target_new``/``target_true``
  as ``{"str": ...}``, ``paraphrase_prompts``, ``neighborhood_prompts``, whose answer is the true object);
- ``mquake``: several rewrites per case (``requested_rewrite`` list); each becomes a request of the
  case's group (edited together in mode ``single``), and the case's last request carries the
  multi-hop ``questions`` (answer ``new_answer`` + aliases) and the new single-hop clozes as portability.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from knowlm.edit.requests import EditRequest, flatten_answers, make_request
from knowlm.errors import KnowlmError
from knowlm.utils.jsonl import read_text

FORMATS = ("auto", "knowlm", "zsre", "counterfact", "mquake")


def _knowlm(record: dict, where: str) -> list[dict]:
    if "prompt" not in record and {"text", "labels", "concept"} <= set(record):  # KnowEdit WikiBio
        record = dict(record, prompt=record["text"], target_new=record["labels"], subject=record["concept"])
    return [record]


def _zsre(record: dict, where: str) -> list[dict]:
    for key in ("src", "alt", "subject"):
        if key not in record:
            raise KnowlmError(f"{where}: ZsRE record without {key!r}")
    if not str(record["alt"]).strip():
        return []
    out = {"prompt": record["src"], "subject": record["subject"], "target_new": record["alt"],
           "ground_truth": record.get("answers"), "rephrase_prompts": [record["rephrase"]] if record.get("rephrase") else [],
           "case_id": record.get("case_id")}
    if record.get("loc") and record.get("loc_ans"):
        out["locality"] = [{"prompt": record["loc"], "answer": record["loc_ans"], "category": "neighborhood"}]
    port = record.get("portability")
    if isinstance(port, dict) and port.get("New Question") and port.get("New Answer"):
        out["portability"] = [{"prompt": port["New Question"], "answer": port["New Answer"], "category": "one_hop"}]
    return [out]


def _counterfact(record: dict, where: str) -> list[dict]:
    rewrite = record.get("requested_rewrite")
    if not isinstance(rewrite, dict):
        raise KnowlmError(f"{where}: CounterFact record without a requested_rewrite object")
    truth = flatten_answers(rewrite.get("target_true"))
    out = {"prompt": rewrite.get("prompt"), "subject": rewrite.get("subject"), "target_new": rewrite.get("target_new"),
           "ground_truth": truth, "rephrase_prompts": list(record.get("paraphrase_prompts") or []),
           "case_id": record.get("case_id")}
    neighbours = record.get("neighborhood_prompts") or []
    if neighbours and truth:
        out["locality"] = [{"prompt": p["prompt"].format(p.get("subject", "")) if isinstance(p, dict) else p,
                            "answer": truth[0], "category": "neighborhood"} for p in neighbours]
    return [out]


def _mquake(record: dict, where: str) -> list[dict]:
    rewrites = record.get("requested_rewrite")
    if not isinstance(rewrites, list) or not rewrites:
        raise KnowlmError(f"{where}: MQuAKE record without a requested_rewrite list")
    case = record.get("case_id", where)
    out = []
    for j, rw in enumerate(rewrites):
        out.append({"prompt": rw.get("prompt"), "subject": rw.get("subject"), "target_new": rw.get("target_new"),
                    "ground_truth": rw.get("target_true"), "rephrase_prompts": [rw["question"]] if rw.get("question") else [],
                    "case_id": f"{case}.{j}", "group": f"mquake-{case}"})
    answers = [record["new_answer"], *(record.get("new_answer_alias") or [])] if record.get("new_answer") else []
    portability = [{"prompt": q, "ground_truth": [answers], "category": "multi_hop"} for q in record.get("questions") or []
                   if answers]
    for hop in record.get("new_single_hops") or []:
        if hop.get("cloze") and hop.get("answer"):
            portability.append({"prompt": hop["cloze"], "ground_truth": [[hop["answer"], *(hop.get("answer_alias") or [])]],
                                "category": "single_hop"})
    out[-1]["portability"] = portability
    return out


ADAPTERS: dict[str, Callable[[dict, str], list[dict]]] = {"knowlm": _knowlm, "zsre": _zsre, "counterfact": _counterfact,
                                                          "mquake": _mquake}


def detect_format(record) -> str:
    if not isinstance(record, dict):
        return "knowlm"
    rewrite = record.get("requested_rewrite")
    if isinstance(rewrite, list):
        return "mquake"
    if isinstance(rewrite, dict):
        return "counterfact"
    if "src" in record and "alt" in record:
        return "zsre"
    return "knowlm"


def read_records(path: Path) -> list:
    """A JSON list (or ``{"requests": [...]}``, or one object), or JSONL."""
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise KnowlmError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
        return records
    if isinstance(data, dict):
        return data["requests"] if isinstance(data.get("requests"), list) else [data]
    if not isinstance(data, list):
        raise KnowlmError(f"{path}: expected a list of edit requests")
    return data


def requests_from_records(records: list, format: str = "auto", name: str = "requests") -> list[EditRequest]:
    if format not in FORMATS:
        raise KnowlmError(f"unknown requests format {format!r}; choose one of: {', '.join(FORMATS)}")
    chosen = detect_format(records[0]) if (format == "auto" and records) else format
    adapter = ADAPTERS[chosen]
    out: list[EditRequest] = []
    for index, record in enumerate(records):
        where = f"{name}: record {index + 1}"
        if not isinstance(record, dict):
            raise KnowlmError(f"{where}: expected a JSON object")
        out += [make_request(r, where) for r in adapter(record, where)]
    return out


def load_dataset_file(path, format: str = "auto") -> list[EditRequest]:
    """Read and validate a requests/dataset file; the layout is detected unless ``format`` names it."""
    path = Path(path)
    if not path.is_file():
        raise KnowlmError(f"requests file not found: {path}")
    out = requests_from_records(read_records(path), format, path.name)
    if not out:
        raise KnowlmError(f"{path}: no edit requests")
    return out
