"""Incremental detokenization: an answer's text, decoded a few tokens per step instead of in full.

Decoding the whole answer after every new token costs O(length) per token, per row: at 64 rows and
128 tokens that is milliseconds of every decode step. :class:`IncrementalText` decodes a short window
instead (the method of vLLM's and TGI's detokenizers): ``prefix`` is the text of the tokens between
``prefix_offset`` and ``read_offset``, ``window`` the text from ``prefix_offset`` to the end, and what
``window`` adds to ``prefix`` is new text. Both windows start at the same token, so a tokenizer's
special treatment of a first token (SentencePiece's leading-space strip) cancels out. The window only
moves past text that is final: not after a byte-fallback piece (``<0xE6>``: a run of them decodes to
characters when it is valid UTF-8 as a whole and to one U+FFFD per byte when it is not, so the next
byte can change the whole run) and not ending in U+FFFD. The result always equals
``tokenizer.decode(all ids)`` (tested against it); tokenizers whose decode rewrites across tokens
(``clean_up_tokenization_spaces``) are decoded in full instead.
"""

from __future__ import annotations

import re
from typing import Sequence

REPLACEMENT = "\ufffd"
_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def byte_token_ids(tokenizer) -> frozenset[int]:
    """Ids of SentencePiece byte-fallback pieces (``<0x0A>``): their text depends on their neighbours."""
    return frozenset(i for piece, i in tokenizer.get_vocab().items() if _BYTE_PIECE.match(piece))


class IncrementalText:
    """The decoded text of a growing token list (``skip_special_tokens=True``)."""

    def __init__(self, tokenizer, byte_ids: frozenset[int] | None = None):
        self.tokenizer = tokenizer
        self.byte_ids = byte_token_ids(tokenizer) if byte_ids is None else byte_ids
        self.special_ids = frozenset(tokenizer.all_special_ids)  # skipped in the text, so a byte run goes on across them
        self.windowed = not getattr(tokenizer, "clean_up_tokenization_spaces", False)
        backend = getattr(tokenizer, "backend_tokenizer", None)  # a fast tokenizer's Rust decoder, without the wrapper's cost
        if self.windowed and backend is not None:
            self._decode = lambda ids: backend.decode(ids, skip_special_tokens=True)
        else:
            self._decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)
        self.committed = ""  # text no later token can change
        self.pending = ""  # text of the tokens after read_offset (may end in a half character)
        self.prefix_offset = 0
        self.read_offset = 0
        self.prefix = ""  # decode(ids[prefix_offset:read_offset])

    @property
    def text(self) -> str:
        """The text of all tokens so far: equal to ``tokenizer.decode(ids, skip_special_tokens=True)``."""
        return self.committed + self.pending

    @property
    def stable(self) -> str:
        """The part of :attr:`text` that later tokens cannot change (safe to stream)."""
        return self.committed

    def update(self, ids: Sequence[int]) -> str:
        """Catch up with ``ids`` (the same list, grown since the last call); returns :attr:`text`."""
        if not self.windowed:
            full = self._decode(list(ids))
            final = self._final_end(ids)
            stable = full if final == len(ids) else self._decode(list(ids[:final]))
            cut = len(stable) if full.startswith(stable) else 0
            self.committed, self.pending = full[:cut], full[cut:]
            return full
        window = self._decode(list(ids[self.prefix_offset :]))
        new = window[len(self.prefix) :] if window.startswith(self.prefix) else None
        if new is None:  # not seen with the tokenizers we know; stay exact by decoding in full from now on
            self.windowed = False
            return self.update(ids)
        if new and not new.endswith(REPLACEMENT) and self._final_end(ids) == len(ids):
            self.committed += new
            self.pending = ""
            self.prefix_offset, self.read_offset = self.read_offset, len(ids)
            self.prefix = self._decode(list(ids[self.prefix_offset : self.read_offset]))
        else:
            self.pending = new
        return self.text

    def _final_end(self, ids: Sequence[int]) -> int:
        """Tokens up to here decode to final text: what follows is a byte-piece run (with skipped specials)."""
        end = len(ids)
        while end > 0 and ids[end - 1] in self.special_ids:
            end -= 1
        if end == 0 or ids[end - 1] not in self.byte_ids:
            return len(ids)
        while end > 0 and (ids[end - 1] in self.byte_ids or ids[end - 1] in self.special_ids):
            end -= 1
        return end
