"""Selectors: composable filters over instruction records (see ``knowlm.instruct.pipeline``)."""

from knowlm.instruct.selectors.base import Decision, SelectContext, Selector
from knowlm.instruct.selectors.diversity import DedupSelector, RougeSelector
from knowlm.instruct.selectors.model_based import JudgeSelector, PerplexitySelector, answer_nll, parse_score
from knowlm.instruct.selectors.simple import LanguageSelector, LengthSelector, MTLDSelector

SELECTORS: dict[str, type[Selector]] = {
    cls.name: cls
    for cls in (LengthSelector, DedupSelector, RougeSelector, PerplexitySelector, MTLDSelector, JudgeSelector, LanguageSelector)
}

__all__ = ["SELECTORS", "Decision", "SelectContext", "Selector", "LengthSelector", "DedupSelector", "RougeSelector",
           "PerplexitySelector", "MTLDSelector", "JudgeSelector", "LanguageSelector", "answer_nll", "parse_score"]
