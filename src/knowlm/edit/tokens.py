"""Token bookkeeping: where the subject ends, and which tokens of ``prompt + target`` are the target.

Both are found from character offsets of one tokenization of the whole text, so they match what
the model sees at generation time (SentencePiece merges a leading space into the next piece).
"""

from __future__ import annotations

from knowlm.errors import KnowlmError


def join(prompt: str, target: str) -> str:
    """``prompt`` followed by ``target`` the way a model would write it (a space between words)."""
    if not prompt or prompt[-1].isspace() or target[:1].isspace() or _is_cjk(prompt[-1]) or _is_cjk(target[:1]):
        return prompt + target
    return prompt + " " + target


def _is_cjk(char: str) -> bool:
    return bool(char) and ("\u2e80" <= char <= "\u9fff" or "\uff00" <= char <= "\uffef")


def _offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def encode_with_target(tokenizer, prompt: str, target: str) -> tuple[list[int], int]:
    """Token ids of ``join(prompt, target)`` and the index of the first target token."""
    text = join(prompt, target)
    ids, offsets = _offsets(tokenizer, text)
    start = next((i for i, (s, e) in enumerate(offsets) if e > len(prompt) and e > s), None)
    if start is None or start == 0:
        raise KnowlmError(f"target {target!r} produced no tokens after prompt {prompt!r}")
    return ids, start


def subject_last_token(tokenizer, text: str, subject: str) -> int:
    """Index (in ``tokenizer(text)``) of the last token of the last occurrence of ``subject``."""
    end = text.rfind(subject)
    if end < 0:
        raise KnowlmError(f"subject {subject!r} does not occur in {text!r}")
    end += len(subject)
    _, offsets = _offsets(tokenizer, text)
    index = None
    for i, (s, e) in enumerate(offsets):
        if e > s and s < end:
            index = i
    if index is None:
        raise KnowlmError(f"cannot locate subject {subject!r} in the tokens of {text!r}")
    return index
