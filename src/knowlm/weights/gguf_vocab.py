"""A Hugging Face tokenizer as GGUF metadata, the way llama.cpp's ``convert_hf_to_gguf.py`` writes it.

Three sources, tried in llama.cpp's order:

- ``tokenizer.model`` (SentencePiece): pieces, scores and types from the model, then
  ``added_tokens.json`` and ``tokenizer_config.json``'s ``added_tokens_decoder`` -- llama.cpp's
  ``_create_vocab_sentencepiece``, step for step.
- ``tokenizer.json`` holding a SentencePiece BPE (byte fallback, ``Metaspace``), which is all
  ``save_pretrained`` writes today. The JSON keeps the pieces in id order but not their scores;
  SentencePiece BPE scores *are* that order (0, -1, -2, ... over the normal pieces), so they are
  rebuilt from it -- identical to the ``tokenizer.model`` export (tested). llama.cpp's own
  fallback writes -1000 for every piece, which leaves its SentencePiece tokenizer no merge order.
- ``tokenizer.json`` holding a byte-level BPE (LLaMA-3, Qwen2): tokens, types and merges, and
  ``tokenizer.ggml.pre`` -- the pre-tokenizer llama.cpp must apply. llama.cpp names it by hashing
  the token ids of a probe text, which only recognises the exact published vocabularies; here it
  is read from the pre-tokenizer's split regex itself, so a fine-tune with added tokens, or a
  tokenizer trained with LLaMA-3's or Qwen2's rules, maps to the same name.

Special token ids, ``add_bos``/``add_eos``, merges and the chat template are written by gguf-py's
``SpecialVocab``, the code llama.cpp's converter uses.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from knowlm.errors import KnowlmError

UNUSED_SCORE = -10000.0  # ids the tokenizer does not fill (llama.cpp's padding)
ADDED_SCORE = -1000.0

# the split regexes of known byte-level BPE pre-tokenizers -> llama.cpp's tokenizer.ggml.pre
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
BPE_PRE = {LLAMA3_SPLIT: "llama-bpe", QWEN2_SPLIT: "qwen2"}
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@dataclass
class Vocab:
    model: str  # tokenizer.ggml.model: "llama" (SentencePiece) or "gpt2" (byte-level BPE)
    pre: str
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    source: str = ""


def looks_special(text: str) -> bool:
    """llama.cpp's ``does_token_look_special``: added tokens some tokenizers forget to mark special."""
    return (text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<｜") and text.endswith("｜>")) or (text.startswith("<unused") and text.endswith(">")))


def _padded(vocab_size: int) -> tuple[list[str], list[float], list[int]]:
    from gguf import TokenType

    return [f"[PAD{i}]" for i in range(vocab_size)], [UNUSED_SCORE] * vocab_size, [int(TokenType.UNUSED)] * vocab_size


def _added_token(tokens, scores, types, token_id: int, text: str, special: bool) -> None:
    from gguf import TokenType

    if token_id >= len(tokens):
        return  # as llama.cpp: an id beyond the model's embedding is ignored
    if special or looks_special(text):
        types[token_id] = int(TokenType.CONTROL)
    else:
        text = text.replace("\u2581", " ")  # llama.cpp pre-normalises user-defined spaces
        types[token_id] = int(TokenType.USER_DEFINED)
    scores[token_id] = ADDED_SCORE
    tokens[token_id] = text


def sentencepiece_vocab(model_dir: Path, vocab_size: int) -> Vocab:
    import sentencepiece as spm
    from gguf import TokenType

    sp = spm.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))
    tokens, scores, types = _padded(vocab_size)
    for i in range(min(sp.vocab_size(), vocab_size)):
        tokens[i], scores[i] = sp.id_to_piece(i), float(sp.get_score(i))
        types[i] = int(TokenType.UNKNOWN if sp.is_unknown(i) else TokenType.CONTROL if sp.is_control(i)
                       else TokenType.UNUSED if sp.is_unused(i) else TokenType.BYTE if sp.is_byte(i) else TokenType.NORMAL)
    added = model_dir / "added_tokens.json"
    if added.is_file():
        for text, token_id in json.loads(added.read_text(encoding="utf-8")).items():
            if token_id < vocab_size:
                tokens[token_id], scores[token_id], types[token_id] = text, ADDED_SCORE, int(TokenType.USER_DEFINED)
    for token_id, entry in _tokenizer_config(model_dir).get("added_tokens_decoder", {}).items():
        _added_token(tokens, scores, types, int(token_id), entry["content"], bool(entry.get("special")))
    return Vocab("llama", "default", tokens, types, scores, "tokenizer.model")


def spm_json_vocab(model_dir: Path, tokenizer: dict, vocab_size: int) -> Vocab:
    """A SentencePiece BPE kept in tokenizer.json, with its scores rebuilt from the id order (see module doc)."""
    from gguf import TokenType

    model = tokenizer["model"]
    tokens, scores, types = _padded(vocab_size)
    specials = {a["id"] for a in tokenizer.get("added_tokens", []) if a.get("special")}
    unk = model.get("unk_token") or _tokenizer_config(model_dir).get("unk_token")  # transformers 5 leaves the model's null
    unk = unk.get("content") if isinstance(unk, dict) else unk
    normal = 0
    for text, token_id in sorted(model["vocab"].items(), key=lambda kv: kv[1]):
        if token_id >= vocab_size:
            continue
        tokens[token_id] = text
        if text == unk:
            scores[token_id], types[token_id] = 0.0, int(TokenType.UNKNOWN)
        elif token_id in specials:
            scores[token_id], types[token_id] = 0.0, int(TokenType.CONTROL)
        elif _BYTE_PIECE.fullmatch(text):
            scores[token_id], types[token_id] = 0.0, int(TokenType.BYTE)
        else:
            scores[token_id], types[token_id] = -float(normal), int(TokenType.NORMAL)
            normal += 1
    for entry in tokenizer.get("added_tokens", []):
        if entry["content"] not in model["vocab"]:
            _added_token(tokens, scores, types, entry["id"], entry["content"], bool(entry.get("special")))
    return Vocab("llama", "default", tokens, types, scores, "tokenizer.json (SentencePiece BPE)")


def bpe_pre(tokenizer: dict) -> str:
    """llama.cpp's name for the pre-tokenizer of a byte-level BPE ``tokenizer.json``."""
    pre = tokenizer.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    splits = [s.get("pattern", {}).get("Regex") for s in steps if s.get("type") == "Split"]
    if splits:
        if len(splits) == 1 and splits[0] in BPE_PRE:
            return BPE_PRE[splits[0]]
        raise KnowlmError(
            f"unknown BPE pre-tokenizer (split regex {splits[0][:48]!r}...): llama.cpp would split text differently "
            f"from this tokenizer; supported: LLaMA-3 (llama-bpe), Qwen2 (qwen2), GPT-2 (gpt-2)"
        )
    if any(s.get("type") == "ByteLevel" and s.get("use_regex", True) for s in steps):
        return "gpt-2"
    raise KnowlmError(f"tokenizer.json's pre-tokenizer {pre.get('type')!r} is not a byte-level BPE that llama.cpp knows")


def bpe_vocab(tokenizer: dict, vocab_size: int) -> Vocab:
    from gguf import TokenType

    pre = bpe_pre(tokenizer)
    tokens, _, types = _padded(vocab_size)
    for text, token_id in tokenizer["model"]["vocab"].items():
        if token_id < vocab_size:
            tokens[token_id], types[token_id] = text, int(TokenType.NORMAL)
    scores = [0.0] * vocab_size  # not written: a byte-level BPE has merges, not scores
    for entry in tokenizer.get("added_tokens", []):
        _added_token(tokens, scores, types, entry["id"], entry["content"], bool(entry.get("special")))
    return Vocab("gpt2", pre, tokens, types, None, f"tokenizer.json (byte-level BPE, {pre})")


def _tokenizer_config(model_dir: Path) -> dict:
    path = model_dir / "tokenizer_config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_vocab(model_dir: Path, vocab_size: int) -> Vocab:
    """The vocabulary of ``model_dir``, from ``tokenizer.model`` if present, else ``tokenizer.json``."""
    if (model_dir / "tokenizer.model").is_file():
        return sentencepiece_vocab(model_dir, vocab_size)
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise KnowlmError(f"{model_dir} has neither tokenizer.model nor tokenizer.json: GGUF export needs the tokenizer")
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    model = tokenizer.get("model", {})
    if model.get("type") != "BPE":
        raise KnowlmError(f"{path}: a {model.get('type')} tokenizer; GGUF export supports SentencePiece and byte-level BPE")
    biggest = max(list(model["vocab"].values()) + [a["id"] for a in tokenizer.get("added_tokens", [])])
    if biggest >= vocab_size:
        raise KnowlmError(f"{path} has token id {biggest} but the model's vocab_size is {vocab_size}")
    llama3_like = model.get("ignore_merges", False) and not model.get("byte_fallback", True)
    if not llama3_like and model.get("byte_fallback") and (tokenizer.get("decoder") or {}).get("type") == "Sequence":
        return spm_json_vocab(model_dir, tokenizer, vocab_size)
    return bpe_vocab(tokenizer, vocab_size)


def write_vocab(writer, model_dir: Path, vocab: Vocab) -> None:
    """Add the tokenizer KVs in llama.cpp's order (model, pre, tokens, [scores], types, then SpecialVocab)."""
    import gguf

    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    log = logging.getLogger("gguf.vocab")  # its warnings about unusual templates are llama.cpp's, not ours to print
    level, log.level = log.level, logging.ERROR
    try:
        special = gguf.SpecialVocab(model_dir, load_merges=vocab.model == "gpt2",
                                    n_vocab=len(vocab.tokens) if vocab.model == "llama" else None)
    finally:
        log.setLevel(level)
    special.add_to_gguf(writer, quiet=True)
