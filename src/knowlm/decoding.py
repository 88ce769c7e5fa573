"""Decoding parameters and named presets (KnowLM's flags plus ``ie`` / ``creative``).

A plain value type with no dependencies, so both sides of the generator seam use it: ``knowlm.infer``
(which decodes) and the torch-free ``knowlm.ie`` (which asks for the ``ie`` preset).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, get_args, get_origin, get_type_hints

from knowlm.errors import KnowlmError


INT64 = 2**63


@dataclass
class DecodingParams:
    """How to pick each next token. The penalties follow vLLM/OpenAI: ``repetition_penalty`` divides the
    logits of tokens already in the prompt or answer, ``presence_penalty`` / ``frequency_penalty`` subtract
    once / per occurrence in the answer; ``logit_bias`` adds to chosen token ids; ``min_new_tokens`` keeps EOS
    and ``stop_token_ids`` out until that many tokens exist; a ``stop_token_ids`` token ends the answer and,
    unless it is a special token, stays in its text (as in vLLM). ``seed`` seeds this request's own random
    generator, so its answer does not depend on what else is decoded alongside."""

    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 disables top-k
    num_beams: int = 1
    repetition_penalty: float = 1.0
    do_sample: bool | None = None  # None: sample when temperature > 0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    min_new_tokens: int = 0
    stop_token_ids: list[int] = field(default_factory=list)
    logit_bias: dict[int, float] = field(default_factory=dict)

    @property
    def sampling(self) -> bool:
        return self.do_sample if self.do_sample is not None else self.temperature > 0

    @property
    def adjusts_scores(self) -> bool:
        """Whether anything but the raw logits decides the token (greedy rows without it take a fast path)."""
        return bool(
            self.repetition_penalty != 1.0 or self.presence_penalty or self.frequency_penalty or self.logit_bias or self.min_new_tokens
        )

    def validate(self) -> "DecodingParams":
        finite = all(math.isfinite(v) for v in (self.temperature, self.top_p, self.repetition_penalty, self.presence_penalty, self.frequency_penalty))
        checks = [
            (finite, "temperature, top_p and the penalties must be finite numbers"),
            (self.max_new_tokens >= 1, "max_new_tokens must be >= 1"),
            (self.temperature >= 0, "temperature must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be >= 0"),
            (self.num_beams >= 1, "num_beams must be >= 1"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty must be in [-2, 2]"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty must be in [-2, 2]"),
            (0 <= self.min_new_tokens <= self.max_new_tokens, "min_new_tokens must be in [0, max_new_tokens]"),
            (all(t >= 0 for t in self.stop_token_ids), "stop_token_ids must be token ids (>= 0)"),
            (all(t >= 0 and math.isfinite(b) and -100 <= b <= 100 for t, b in self.logit_bias.items()), "logit_bias maps token ids to values in [-100, 100]"),
            (self.seed is None or -INT64 <= self.seed < 2 * INT64, "seed must be a 64-bit integer"),
            (not (self.sampling and self.temperature == 0 and self.do_sample), "do_sample needs temperature > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise KnowlmError(message)
        return self

    def updated(self, **changes: Any) -> "DecodingParams":
        """A copy with ``changes`` applied; names and values are checked (for /set and per-case params)."""
        kinds = _field_kinds()
        clean: dict[str, Any] = {}
        for name, value in changes.items():
            if value is None:
                continue
            name = ALIASES.get(name, name)
            if name not in kinds:
                raise KnowlmError(f"unknown decoding parameter {name!r}; known: {', '.join(kinds)}")
            clean[name] = _coerce(name, value, kinds[name])
        return replace(self, **clean).validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ALIASES = {"max_tokens": "max_new_tokens", "min_tokens": "min_new_tokens"}  # vLLM / OpenAI names


def _field_kinds() -> dict[str, Any]:
    """Each field's value type (``int | None`` -> int), from the annotations rather than the current value."""
    kinds = {}
    for name, hint in get_type_hints(DecodingParams).items():
        if get_origin(hint) in (list, dict):
            kinds[name] = get_origin(hint)
        else:
            args = [a for a in get_args(hint) if a is not type(None)]
            kinds[name] = args[0] if args else hint
    return kinds


def _coerce(name: str, value: Any, kind: Any) -> Any:
    try:
        if kind is list and name == "stop":
            return [value] if isinstance(value, str) else [str(v) for v in value]
        if kind is list:
            return [_coerce(name, v, int) for v in (json.loads(value) if isinstance(value, str) else value)]
        if kind is dict:
            items = json.loads(value) if isinstance(value, str) else value
            return {_coerce(name, k, int): _coerce(name, v, float) for k, v in dict(items).items()}
        if kind is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if isinstance(value, bool):  # True is not a seed or a temperature
            raise ValueError(value)
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError, OverflowError, json.JSONDecodeError):
        raise KnowlmError(f"bad value {value!r} for decoding parameter {name}") from None


PRESETS: dict[str, DecodingParams] = {
    # Extraction wants the single most likely structured answer.
    "ie": DecodingParams(max_new_tokens=512, temperature=0.0, num_beams=1, repetition_penalty=1.0),
    "default": DecodingParams(),
    # KnowLM's chat defaults.
    "creative": DecodingParams(max_new_tokens=512, temperature=0.7, top_p=0.9, top_k=40, repetition_penalty=1.3),
}


def preset(name: str) -> DecodingParams:
    try:
        return replace(PRESETS[name])
    except KeyError:
        raise KnowlmError(f"unknown decoding preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
