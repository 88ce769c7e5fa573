"""Schema-constrained decoding: the model can only write the answer object we asked for.

For each schema batch we build a JSON Schema whose properties are the schema items in order
(the first required, nothing else allowed, none twice) with the right value shape per task, bounded in
string length and array size so even a random model reaches the closing brace. xgrammar
compiles it against the tokenizer (cached per tokenizer and schema) and a logits processor
masks every token that would leave the grammar, one matcher per batch row, so a batch may mix
schemas.

This is the only module of ``knowlm.ie`` that imports torch/xgrammar, and only when called.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Sequence

from knowlm.errors import KnowlmError
from knowlm.ie.schema import Schema, make_schema

SEPARATORS = (", ", ": ")  # json.dumps defaults: what gold_output writes and models are tuned on
MAX_CACHED = 512  # compiled grammars kept
RECHECK_TOP = 8  # the most likely tokens per step re-checked when xgrammar's mask drops them


@dataclass(frozen=True)
class Bounds:
    """Limits that make every constrained answer finite."""

    max_items: int = 8  # per schema item
    max_chars: int = 48  # per span
    max_args: int = 1  # EE: values per role are strings (one span)


def json_schema(task: str, schema: Any, bounds: Bounds = Bounds()) -> dict:
    """The JSON Schema of the answer to one prompt (one schema batch); a :class:`Schema` brings its own task."""
    schema = schema if isinstance(schema, Schema) else make_schema(task, schema)
    # A pattern rather than min/maxLength: xgrammar's plain JSON string admits raw control
    # characters, which json.loads rejects; this one is valid JSON by construction.
    span = {"type": "string", "pattern": r'[^"\\\x00-\x1f]{1,%d}' % bounds.max_chars}
    props: dict[str, Any] = {}
    for item in schema.items:
        if schema.task in ("ner", "eet"):  # a list of spans (entities, or an event type's triggers)
            props[item] = {"type": "array", "items": span, "maxItems": bounds.max_items}
        elif schema.task in ("re", "spo"):
            pair = {
                "type": "object",
                "properties": {"subject": span, "object": span},
                "required": ["subject", "object"],
                "additionalProperties": False,
            }
            props[item.name if schema.task == "spo" else item] = {"type": "array", "items": pair, "maxItems": bounds.max_items}
        else:
            args = {
                "type": "object",
                "properties": {role: span for role in item.roles},
                "required": list(item.roles),
                "additionalProperties": False,
            }
            event = args if schema.task == "eea" else {  # EEA answers the arguments object itself (IEPile)
                "type": "object",
                "properties": {"trigger": span, "arguments": args},
                "required": ["trigger", "arguments"],
                "additionalProperties": False,
            }
            props[item.name] = {"type": "array", "items": event, "maxItems": bounds.max_items}
    # Only the first key is required: the answer may close after any key, as a free answer may (a
    # key left out is read as no items). Requiring all of them forced a tuned model that had finished
    # to go on, and it filled the forced keys with invented items (held-out relation precision 0.447
    # free, 0.434 constrained; equal once the answer may close).
    return {"type": "object", "properties": props, "required": list(props)[:1], "additionalProperties": False}


class GrammarCache:
    """Compiled grammars per (tokenizer, schema): compiling is cheap, but a run asks the same
    few schema batches for thousands of texts."""

    def __init__(self) -> None:
        self._compilers: dict[tuple[int, int], Any] = {}
        self._grammars: dict[tuple[int, int, str, bool], Any] = {}
        self._lock = threading.RLock()

    def compiler(self, tokenizer, vocab_size: int):
        key = (id(tokenizer), vocab_size)
        if key not in self._compilers:
            try:
                import xgrammar as xgr
            except ImportError:
                raise KnowlmError(
                    "--constrained needs xgrammar: pip install --no-deps xgrammar==0.2.8 apache-tvm-ffi"
                ) from None
            info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
            self._compilers[key] = (xgr.GrammarCompiler(info, max_threads=2), tokenizer, info.decoded_vocab)
        return self._compilers[key][0]

    def vocab_bytes(self, tokenizer, vocab_size: int) -> list[bytes]:
        """Each token id's bytes as the tokenizer decodes it (xgrammar's view of the vocabulary)."""
        self.compiler(tokenizer, vocab_size)
        return self._compilers[(id(tokenizer), vocab_size)][2]

    def grammar(self, tokenizer, vocab_size: int, json_schema_obj: dict, strict: bool = True):
        """``strict``: objects admit only the properties the schema lists (extraction answers, OpenAI's
        ``json_schema``); otherwise any further properties are allowed (OpenAI's ``json_object``)."""
        text = json.dumps(json_schema_obj, ensure_ascii=False, sort_keys=False)
        key = (id(tokenizer), vocab_size, text, strict)
        with self._lock:  # a server compiles from several threads
            if key not in self._grammars:
                compiler = self.compiler(tokenizer, vocab_size)
                while len(self._grammars) >= MAX_CACHED:  # a server compiles clients' schemas: keep the newest
                    del self._grammars[next(iter(self._grammars))]
                import xgrammar as xgr

                # An optional space first: a SentencePiece model starts its answer with a word-start
                # piece (``▁{"``); forbidding it forces another tokenization than the one it was tuned
                # on, and the first key's value comes out empty.
                grammar = xgr.Grammar.concat(
                    xgr.Grammar.from_ebnf('root ::= " "?'),
                    xgr.Grammar.from_json_schema(text, any_whitespace=False, separators=SEPARATORS, strict_mode=strict),
                )
                self._grammars[key] = compiler.compile_grammar(grammar)
            return self._grammars[key]

    def __len__(self) -> int:
        return len(self._grammars)


CACHE = GrammarCache()


def make_processor(compiled: Sequence[Any]):
    """A transformers logits processor masking each row of a batch with its own grammar.

    xgrammar's token mask (0.2.8 and 0.2.9) can leave out a token its own matcher accepts: with the
    vocabulary ``t s ts tts`` and the grammar ``"x" "tts" "y"``, ``tts`` is masked after ``x``
    (the rejected ``ts`` before it in sorted order makes the mask skip it). The demo's tokenizer
    loses ``member`` that way, and a tuned model that wanted to write the key ``"member of"``
    was forced to spell it ``m``-``ember``… and wander into ``"member of sports team"``. So the
    :data:`RECHECK_TOP` most likely tokens the mask removed are asked of the matcher itself, the
    authority, and let back in when it accepts them: a greedy answer that fits the grammar is then
    exactly the free answer.
    """
    import torch
    import transformers
    import xgrammar as xgr

    class GrammarLogitsProcessor(transformers.LogitsProcessor):
        """Single use: a new one per ``generate`` call (matchers keep their state)."""

        def __init__(self, grammars: Sequence[Any]):
            self.matchers = [xgr.GrammarMatcher(g) for g in grammars]
            self.vocab_size = grammars[0].tokenizer_info.vocab_size
            self.bitmask = xgr.allocate_token_bitmask(len(grammars), self.vocab_size)
            self.started = False

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            if input_ids.shape[0] != len(self.matchers):
                raise RuntimeError(f"grammar processor built for {len(self.matchers)} rows, got {input_ids.shape[0]}")
            if self.started:
                last = input_ids[:, -1].tolist()
                for matcher, token in zip(self.matchers, last):
                    if not matcher.is_terminated():
                        matcher.accept_token(token)
            self.started = True
            for row, matcher in enumerate(self.matchers):
                if not matcher.is_terminated():
                    matcher.fill_next_token_bitmask(self.bitmask, row)
            top_values, top_ids = scores.topk(min(RECHECK_TOP, scores.shape[-1]), dim=-1)
            xgr.apply_token_bitmask_inplace(scores, self.bitmask if scores.device.type == "cpu" else self.bitmask.to(scores.device))
            return self._readmit(scores, top_values, top_ids)

        def _readmit(self, scores: torch.FloatTensor, top_values: torch.Tensor, top_ids: torch.Tensor) -> torch.FloatTensor:
            """Give back the likely tokens the mask dropped that the matcher accepts (see above)."""
            dropped = torch.isneginf(scores.gather(1, top_ids)) & ~torch.isneginf(top_values)
            if not bool(dropped.any()):
                return scores
            out = scores
            for row, col in dropped.nonzero().tolist():
                matcher, token = self.matchers[row], int(top_ids[row, col])
                if token < self.vocab_size and not matcher.is_terminated() and matcher.accept_token(token):
                    matcher.rollback(1)
                    if out is scores:  # a copy: the serving engine's logits may be inference tensors
                        out = scores.clone()
                    out[row, token] = top_values[row, col]
            return out

    return GrammarLogitsProcessor(compiled)


def make_grounding_processor(indices: Sequence[Any], vocab: list[bytes]):
    """A logits processor that keeps each row's span values on its text's candidate spans
    (:class:`knowlm.ie.grounding.SpanIndex` per row; ``None`` rows are not grounded). It runs after
    the grammar processor and only narrows what the grammar allows; a row with no allowed token
    (cannot happen with the grammar's span bounds) is left to the grammar."""
    import torch
    import transformers

    from knowlm.ie.grounding import ValueTracker

    class GroundingLogitsProcessor(transformers.LogitsProcessor):
        def __init__(self) -> None:
            self.trackers = [ValueTracker() for _ in indices]
            self.started = False

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            if self.started:
                for tracker, token in zip(self.trackers, input_ids[:, -1].tolist()):
                    tracker.feed(vocab[token] if token < len(vocab) else b"")
            self.started = True
            out = scores
            for row, (tracker, index) in enumerate(zip(self.trackers, indices)):
                if index is None or not tracker.in_value:
                    continue
                allowed = index.allowed(tracker.written, vocab)
                if not allowed:
                    continue
                if out is scores:  # a copy: the serving engine's logits may be inference tensors
                    out = scores.clone()
                ids = torch.tensor(allowed, device=scores.device)
                out[row] = float("-inf")
                out[row, ids] = scores[row, ids]
            return out

    return GroundingLogitsProcessor()


class SchemaProcessors:
    """What :func:`processor_factory` returns: a ``TextGenerator.generate(logits_processor=...)`` factory.

    Called with one batch's prompt indices it gives that batch's xgrammar logits processor (the Hugging
    Face generators); ``json_schemas[i]`` is prompt ``i``'s JSON Schema, for backends that constrain
    output from the schema themselves (vLLM's structured outputs, :mod:`knowlm.infer.vllm_generator`),
    so every backend decodes against the same schema. Grammars are compiled (and cached) on first use.
    ``span_indices[i]`` (optional) grounds prompt ``i``'s span values in its text (Hugging Face
    generators only).
    """

    def __init__(self, tokenizer, vocab_size: int, json_schemas: Sequence[dict], cache: GrammarCache = CACHE,
                 span_indices: Sequence[Any] | None = None):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.json_schemas = list(json_schemas)
        self.cache = cache
        self.span_indices = list(span_indices) if span_indices is not None else None

    def __call__(self, indices: Sequence[int]) -> list:
        processors = [make_processor([self.cache.grammar(self.tokenizer, self.vocab_size, self.json_schemas[i]) for i in indices])]
        if self.span_indices is not None:
            vocab = self.cache.vocab_bytes(self.tokenizer, self.vocab_size)
            processors.append(make_grounding_processor([self.span_indices[i] for i in indices], vocab))
        return processors


def processor_factory(generator, task: str, row_schemas: Sequence[Any], bounds: Bounds = Bounds(), cache: GrammarCache = CACHE,
                      row_texts: Sequence[str] | None = None) -> SchemaProcessors:
    """The constrained-decoding factory for ``generator``: ``row_schemas[i]`` is the schema batch of prompt
    ``i`` (:class:`Schema` objects may mix tasks in one batch). Grammars mask the generator's
    ``vocab_size`` logits with its ``tokenizer``. ``row_texts[i]`` (optional): the text whose spans
    prompt ``i``'s answer may name (grounded decoding, :mod:`knowlm.ie.grounding`); prompts of one
    text share one span index."""
    indices = None
    if row_texts is not None:
        from knowlm.ie.grounding import SpanIndex, candidate_spans

        by_text: dict[str, SpanIndex] = {}
        for text in row_texts:
            if text not in by_text:
                by_text[text] = SpanIndex(candidate_spans(text, max_chars=bounds.max_chars))
        indices = [by_text[text] for text in row_texts]
    return SchemaProcessors(generator.tokenizer, generator.vocab_size, [json_schema(task, s, bounds) for s in row_schemas], cache, indices)
