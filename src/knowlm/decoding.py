"""Decoding parameters and named presets (KnowLM's flags plus ``ie`` / ``creative``).

A plain value type with no dependencies, so both sides of the generator seam use it: ``knowlm.infer``
(which decodes) and the torch-free ``knowlm.ie`` (which asks for the ``ie`` preset).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from knowlm.errors import KnowlmError


@dataclass
class DecodingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 disables top-k
    num_beams: int = 1
    repetition_penalty: float = 1.0
    do_sample: bool | None = None  # None: sample when temperature > 0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    @property
    def sampling(self) -> bool:
        return self.do_sample if self.do_sample is not None else self.temperature > 0

    def validate(self) -> "DecodingParams":
        checks = [
            (self.max_new_tokens >= 1, "max_new_tokens must be >= 1"),
            (self.temperature >= 0, "temperature must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be >= 0"),
            (self.num_beams >= 1, "num_beams must be >= 1"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (not (self.sampling and self.temperature == 0 and self.do_sample), "do_sample needs temperature > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise KnowlmError(message)
        return self

    def updated(self, **changes: Any) -> "DecodingParams":
        """A copy with ``changes`` applied; names and values are checked (for /set and per-case params)."""
        known = {f.name: f for f in fields(self)}
        clean: dict[str, Any] = {}
        for name, value in changes.items():
            if value is None:
                continue
            if name == "max_tokens":
                name = "max_new_tokens"
            if name not in known:
                raise KnowlmError(f"unknown decoding parameter {name!r}; known: {', '.join(known)}")
            clean[name] = _coerce(name, value, type(getattr(self, name)) if getattr(self, name) is not None else bool)
        return replace(self, **clean).validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _coerce(name: str, value: Any, kind: type) -> Any:
    try:
        if name == "stop":
            return [value] if isinstance(value, str) else [str(v) for v in value]
        if kind is bool or name == "do_sample":
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError):
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
