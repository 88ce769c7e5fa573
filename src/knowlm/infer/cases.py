"""Batch case runner: a JSONL file of cases in, a JSONL file of answers out.

A case is ``{"id"?, "instruction", "input"?, "system"?, "parameters"?: {...}}``; cases that
share decoding parameters are generated together in batches, and answers are written in the
input order. A malformed case is an error naming its line: running half a file silently would
lose data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowlm.errors import KnowlmError
from knowlm.decoding import DecodingParams
from knowlm.infer.generator import TextGenerator
from knowlm.utils.jsonl import open_text, write_jsonl


@dataclass
class Case:
    id: str
    instruction: str
    input: str
    system: str | None
    params: DecodingParams


def read_cases(path: str | Path, defaults: DecodingParams) -> list[Case]:
    cases: list[Case] = []
    with open_text(path) as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise KnowlmError(f"{path}:{lineno}: invalid JSON in cases file ({exc.msg})") from None
            cases.append(_parse_case(raw, defaults, f"{path}:{lineno}", len(cases)))
    if not cases:
        raise KnowlmError(f"{path}: no cases found")
    return cases


def _parse_case(raw: Any, defaults: DecodingParams, where: str, index: int) -> Case:
    if not isinstance(raw, dict):
        raise KnowlmError(f"{where}: a case must be a JSON object")
    instruction = raw.get("instruction", raw.get("prompt"))
    if not isinstance(instruction, str) or not instruction.strip():
        raise KnowlmError(f"{where}: a case needs a non-empty 'instruction' string")
    input_text = raw.get("input") or ""
    if not isinstance(input_text, str):
        raise KnowlmError(f"{where}: 'input' must be a string")
    parameters = raw.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise KnowlmError(f"{where}: 'parameters' must be an object")
    try:
        params = defaults.updated(**parameters)
    except KnowlmError as exc:
        raise KnowlmError(f"{where}: {exc}") from None
    return Case(str(raw.get("id", index)), instruction, input_text, raw.get("system"), params)


def run_cases(generator: TextGenerator, cases: list[Case], batch_size: int = 16, progress: bool = True) -> list[dict]:
    """Generate every case; cases with equal parameters share batches. Results in input order."""
    groups: dict[str, list[int]] = {}
    for index, case in enumerate(cases):
        groups.setdefault(json.dumps(case.params.to_dict(), sort_keys=True), []).append(index)
    results: list[dict | None] = [None] * len(cases)
    for indices in groups.values():
        params = cases[indices[0]].params
        prompts = [generator.prompt(cases[i].instruction, cases[i].input, cases[i].system) for i in indices]
        for index, generation in zip(indices, generator.generate(prompts, params, batch_size, progress=progress)):
            case = cases[index]
            results[index] = {
                "id": case.id,
                "instruction": case.instruction,
                "input": case.input,
                "output": generation.text,
                "num_tokens": generation.num_tokens,
                "finish_reason": generation.finish_reason,
                "parameters": case.params.to_dict(),
            }
    return results  # type: ignore[return-value]


def run_cases_file(generator: TextGenerator, cases_path: str | Path, output: str | Path, defaults: DecodingParams, batch_size: int = 16) -> list[dict]:
    results = run_cases(generator, read_cases(cases_path, defaults), batch_size)
    write_jsonl(output, results)
    return results
