"""Selectors that look at one record at a time: length bounds, MTLD lexical diversity, language."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from knowlm.instruct.mtld import TTR_THRESHOLD, mtld
from knowlm.instruct.selectors.base import Decision, SelectContext, Selector, need
from knowlm.instruct.text import language_of, record_text, tokenize

TEXT_FIELDS = ("all", "prompt", "instruction", "input", "output")


@dataclass
class LengthSelector(Selector):
    """Bounds on instruction and output length, in tokens (a CJK character or a word) or chars."""

    name: ClassVar[str] = "length"
    unit: str = "tokens"
    min_instruction: int = 2
    max_instruction: int | None = 2048
    min_output: int = 1
    max_output: int | None = 4096
    max_total: int | None = None  # instruction + input + output

    def check(self) -> None:
        need(self.unit in ("tokens", "chars"), "length: unit must be tokens or chars")

    def _size(self, text: str) -> int:
        return len(tokenize(text)) if self.unit == "tokens" else len(text.strip())

    def decide(self, records: list[dict], context: SelectContext) -> list[Decision]:
        out = []
        for record in records:
            sizes = {name: self._size(record_text(record, name)) for name in ("instruction", "input", "output")}
            total = sum(sizes.values())
            reason = None
            if sizes["instruction"] < self.min_instruction:
                reason = "instruction_too_short"
            elif self.max_instruction is not None and sizes["instruction"] > self.max_instruction:
                reason = "instruction_too_long"
            elif sizes["output"] == 0 and self.min_output > 0:
                reason = "empty_output"
            elif sizes["output"] < self.min_output:
                reason = "output_too_short"
            elif self.max_output is not None and sizes["output"] > self.max_output:
                reason = "output_too_long"
            elif self.max_total is not None and total > self.max_total:
                reason = "too_long"
            out.append(Decision(reason is None, {**sizes, "total": total}, reason))
        return out


@dataclass
class MTLDSelector(Selector):
    """Drop repetitive text (low MTLD). Texts shorter than ``min_tokens`` are not judged (MTLD is
    meaningless on a few words) and are kept with a null score."""

    name: ClassVar[str] = "mtld"
    field: str = "output"
    min_mtld: float | None = 10.0
    max_mtld: float | None = None
    min_tokens: int = 16
    ttr_threshold: float = TTR_THRESHOLD

    def check(self) -> None:
        need(self.field in TEXT_FIELDS, f"mtld: field must be one of {', '.join(TEXT_FIELDS)}")
        need(0.0 < self.ttr_threshold < 1.0, "mtld: ttr_threshold must be in (0, 1)")

    def decide(self, records: list[dict], context: SelectContext) -> list[Decision]:
        out = []
        for record in records:
            tokens = tokenize(record_text(record, self.field))
            if len(tokens) < self.min_tokens:
                out.append(Decision(True, None))
                continue
            score = round(mtld(tokens, self.ttr_threshold), 4)
            if self.min_mtld is not None and score < self.min_mtld:
                out.append(Decision(False, score, "low_lexical_diversity"))
            elif self.max_mtld is not None and score > self.max_mtld:
                out.append(Decision(False, score, "high_lexical_diversity"))
            else:
                out.append(Decision(True, score))
        return out


@dataclass
class LanguageSelector(Selector):
    """Keep records in the wanted languages (zh/en detected per text; "other" for other scripts).
    ``consistent``: also require the instruction and the output to be in the same language."""

    name: ClassVar[str] = "language"
    langs: list[str] = field(default_factory=lambda: ["zh", "en"])
    field: str = "all"
    consistent: bool = False

    def check(self) -> None:
        need(self.field in TEXT_FIELDS, f"language: field must be one of {', '.join(TEXT_FIELDS)}")
        if isinstance(self.langs, str):
            self.langs = [self.langs]
        need(bool(self.langs), "language: langs must name at least one language")

    def decide(self, records: list[dict], context: SelectContext) -> list[Decision]:
        out = []
        for record in records:
            lang = language_of(record_text(record, self.field))
            if lang not in self.langs:
                out.append(Decision(False, lang, "no_text" if lang == "none" else f"language_{lang}"))
                continue
            if self.consistent:
                asked, answered = language_of(record_text(record, "prompt")), language_of(record_text(record, "output"))
                if "none" not in (asked, answered) and asked != answered:
                    out.append(Decision(False, f"{asked}->{answered}", "language_mismatch"))
                    continue
            out.append(Decision(True, lang))
        return out
