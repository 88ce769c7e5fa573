"""MTLD lexical diversity (McCarthy & Jarvis 2010).

Walk the tokens keeping the type/token ratio (TTR) of the current segment; each time it falls to
the threshold (0.72) one "factor" is complete and a new segment starts. The leftover segment
counts as the fraction ``(1 - TTR) / (1 - threshold)`` of a factor. MTLD is tokens / factors,
averaged over a forward and a backward pass. Higher means more varied wording; looping,
repetitive generations score low.
"""

from __future__ import annotations

from typing import Sequence

TTR_THRESHOLD = 0.72


def mtld_pass(tokens: Sequence[str], threshold: float = TTR_THRESHOLD) -> float:
    """One directional pass. A text whose TTR never drops (all distinct, no factor at all) gets
    ``len(tokens)``: the measure is unbounded there and its length is the honest lower bound."""
    factors = 0.0
    types: set[str] = set()
    count = 0
    ttr = 1.0
    for token in tokens:
        count += 1
        types.add(token)
        ttr = len(types) / count
        if ttr <= threshold:
            factors += 1.0
            types, count, ttr = set(), 0, 1.0
    if count:
        factors += (1.0 - ttr) / (1.0 - threshold)
    return len(tokens) / factors if factors > 0 else float(len(tokens))


def mtld(tokens: Sequence[str], threshold: float = TTR_THRESHOLD) -> float:
    """Mean of the forward and backward passes (0.0 for an empty text)."""
    if not tokens:
        return 0.0
    return (mtld_pass(tokens, threshold) + mtld_pass(list(reversed(tokens)), threshold)) / 2.0
