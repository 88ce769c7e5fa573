"""What every selector is: parameters from YAML in, one decision per record out.

``decide`` sees the records in order and returns a :class:`Decision` for each: keep or not,
why not, and the score it used. Order-dependent selectors (dedup, ROUGE-L diversity) compare an
item only with the earlier items *they* kept, so a dry run reports exactly what that step would
drop on its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from knowlm.errors import KnowlmError


@dataclass
class Decision:
    keep: bool
    score: Any = None
    reason: str | None = None  # why the record is dropped (None when kept)
    note: str | None = None  # kept but worth counting (e.g. the judge's answer was unreadable)


@dataclass
class SelectContext:
    """What selectors that need a model get from the command line (a step's own params win)."""

    model: str | None = None  # local model for perplexity (and the judge when no endpoint is given)
    adapter: str | None = None
    api_base: str | None = None  # OpenAI-compatible endpoint for the judge
    api_key: str | None = None
    api_model: str | None = None
    llm: Any = None  # an already-built LLM (tests, library callers)
    generator: Any = None  # an already-built knowlm.infer.Generator for perplexity (tests, library callers)
    progress: bool = False


@dataclass
class Selector:
    """Base: subclasses are dataclasses whose fields are the step's YAML params."""

    name: ClassVar[str] = ""

    @classmethod
    def from_params(cls, params: dict) -> "Selector":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise KnowlmError(f"selector {cls.name!r}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known)) or 'none'}")
        try:
            selector = cls(**params)
        except TypeError as exc:
            raise KnowlmError(f"selector {cls.name!r}: {exc}") from None
        selector.check()
        return selector

    def check(self) -> None:
        """Validate parameters (raise KnowlmError)."""

    def params(self) -> dict:
        return dataclasses.asdict(self)

    def decide(self, records: list[dict], context: SelectContext) -> list[Decision]:
        raise NotImplementedError


def need(condition: bool, message: str) -> None:
    if not condition:
        raise KnowlmError(message)
