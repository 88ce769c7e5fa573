"""The serving logic between HTTP (or the web UI) and a backend: models, templates, limits.

:class:`Service` knows which names a request may ask for (the base model and each LoRA
adapter), which prompt template each one was trained with (from its ``knowlm.json``), and
the server's limits. :class:`EngineGenerator` is a :class:`knowlm.infer.TextGenerator` over the
running backend (HF or vLLM), so the extraction layer runs unchanged on a live server.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from knowlm.decoding import DecodingParams
from knowlm.errors import KnowlmError
from knowlm.infer.backends import GenerationRequest, RequestHandle
from knowlm.infer.generator import Generation, TemplatePrompts
from knowlm.serve.errors import ApiError


@dataclass
class ServeLimits:
    max_body_bytes: int = 1_000_000
    max_prompt_tokens: int | None = None  # default: the model's context minus one
    max_tokens: int = 2048  # largest max_tokens a request may ask for
    default_max_tokens: int = 256  # /generate, chat and /extract when the request gives none
    completion_default_max_tokens: int = 16  # /v1/completions default, as OpenAI's


@dataclass(frozen=True)
class Target:
    """What a request's ``model`` field resolved to."""

    name: str
    adapter: str | None
    template: str
    ie_wording: str = "full"  # the IE prompt wording the model (or adapter) was tuned on


SEED_STRIDE = 0x9E3779B97F4A7C15  # spreads the seeds of a request's choices over the 64-bit range


class Service:
    def __init__(self, engine, targets: dict[str, Target], default: str, limits: ServeLimits | None = None):
        self.engine = engine
        self.targets = targets
        self.default = default
        self.limits = limits or ServeLimits()
        self.started = False
        self.stopping = False
        self._token_texts: dict[int, tuple[str, list[int]]] = {}

    @classmethod
    def from_engine(
        cls,
        engine,
        model_path: str,
        model_name: str | None = None,
        template: str | None = None,
        limits: ServeLimits | None = None,
    ) -> "Service":
        """Names: the base model (``model_name`` or its directory name) and every adapter.

        With adapters, the first one is the default (serving a LoRA usually means wanting it);
        the base model stays reachable by its name.
        """
        from knowlm.models import resolve_template
        from knowlm.models.templates import resolve_ie_wording

        base = model_name or Path(model_path.rstrip("/")).name or "knowlm"
        targets = {base: Target(base, None, resolve_template(model_path, None, template), resolve_ie_wording(model_path))}
        for name, path in getattr(engine, "adapter_paths", {}).items():
            if name in targets:
                raise KnowlmError(f"adapter name {name!r} clashes with the model name; pick another NAME in --adapter NAME=PATH")
            targets[name] = Target(name, name, resolve_template(model_path, path, template), resolve_ie_wording(model_path, path))
        default = next(iter(getattr(engine, "adapter_paths", {}) or {base: None}))
        return cls(engine, targets, default, limits)

    # -- names and prompts ----------------------------------------------------------------
    def model_names(self) -> list[str]:
        return list(self.targets)

    def resolve(self, name: str | None) -> Target:
        if not name:
            return self.targets[self.default]
        try:
            return self.targets[name]
        except KeyError:
            raise ApiError(404, f"model {name!r} not found; available: {', '.join(self.targets)}") from None

    @staticmethod
    def prompt(target: Target, instruction: str, input: str = "", system: str | None = None, history=()) -> str:
        from knowlm.models.templates import render

        return render(target.template, instruction, input, system, history)

    def chat_prompt(self, target: Target, messages: Sequence[Any]) -> str:
        """OpenAI chat messages -> the prompt in the target's template."""
        system, history, question = chat_to_turns(messages)
        return self.prompt(target, question, "", system, history)

    @staticmethod
    def template_stops(target: Target) -> list[str]:
        from knowlm.models.templates import get

        return list(get(target.template).stop)

    # -- decoding parameters --------------------------------------------------------------
    def params(self, fields: dict[str, Any], default_max_tokens: int | None = None, extra_stop: Sequence[str] = ()) -> DecodingParams:
        """A request's decoding fields (``decoding_fields()`` of its schema) -> checked DecodingParams.

        The one place request values meet the server's limits: ``max_tokens`` over the limit, too many
        stop strings and invalid values are 400s; ``extra_stop`` (the template's turn markers) is added.
        """
        from knowlm.serve.schemas import MAX_STOP, MAX_STOP_CHARS

        fields = {k: v for k, v in fields.items() if v is not None}
        max_tokens = fields.pop("max_tokens", None)
        if max_tokens is not None and max_tokens > self.limits.max_tokens:
            raise ApiError(400, f"max_tokens={max_tokens} exceeds this server's limit of {self.limits.max_tokens}")
        stop = fields.pop("stop", None)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > MAX_STOP or any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ApiError(400, f"stop: at most {MAX_STOP} strings of at most {MAX_STOP_CHARS} characters")
        stops = [s for s in stops if s]
        stops += [s for s in extra_stop if s not in stops]
        if fields.get("top_k", 0) < 0:
            fields["top_k"] = 0
        limit = default_max_tokens or self.limits.default_max_tokens
        try:
            return DecodingParams(max_new_tokens=min(limit, self.limits.max_tokens)).updated(max_new_tokens=max_tokens, stop=stops, **fields)
        except KnowlmError as exc:
            raise ApiError(400, str(exc)) from None

    # -- submitting -----------------------------------------------------------------------
    def submit(self, target: Target, prompt: str, params: DecodingParams, loop=None, processors=None, logprobs: int | None = None) -> RequestHandle:
        if self.stopping:
            raise ApiError(503, "server is shutting down")
        limit = self.limits.max_prompt_tokens
        if limit is not None:
            count = self.engine.count_tokens(prompt)
            if count > limit:
                raise ApiError(400, f"prompt has {count} tokens; this server accepts at most {limit}")
        request = GenerationRequest(prompt=prompt, params=params, adapter=target.adapter, processors=processors, logprobs=logprobs)
        return self.engine.submit(request, loop=loop)

    def submit_choices(self, target: Target, prompts: Sequence[str], params: DecodingParams, n: int = 1, loop=None,
                       processors: Callable[[], list] | None = None, logprobs: int | None = None) -> list[RequestHandle]:
        """``n`` answers to each prompt (choice ``i * n + j``), all decoded in the shared batch.

        Choice ``j`` of a seeded request uses its own seed derived from the request's (``j == 0``: the
        seed itself), so choices differ yet the whole answer reproduces. ``processors`` builds fresh
        logits processors per choice (grammar matchers are single-use). If one submission is refused,
        the ones already queued are cancelled.
        """
        handles: list[RequestHandle] = []
        try:
            for prompt in prompts:
                for j in range(n):
                    choice = params if j == 0 or params.seed is None else replace(params, seed=(params.seed + j * SEED_STRIDE) % 2**64)
                    handles.append(self.submit(target, prompt, choice, loop, processors() if processors else None, logprobs))
        except BaseException:
            for handle in handles:
                handle.cancel()
            raise
        return handles

    # -- tokens ---------------------------------------------------------------------------
    def token_text(self, token_id: int) -> tuple[str, list[int]]:
        """How one token reads on its own, and its UTF-8 bytes (logprobs): SentencePiece's word marker is a
        space; a byte-fallback piece (``<0xE6>``) is its byte, which alone may be no character (U+FFFD)."""
        known = self._token_texts.get(token_id)
        if known is None:
            piece = self.engine.tokenizer.convert_ids_to_tokens(token_id) or ""
            if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
                raw = bytes([int(piece[3:5], 16)])
                known = (raw.decode("utf-8", "replace"), list(raw))
            else:
                text = piece.replace("\u2581", " ")
                known = (text, list(text.encode("utf-8")))
            self._token_texts[token_id] = known
        return known

    def json_processors(self, schema: dict | None) -> Callable[[], list]:
        """Fresh grammar processors forcing JSON that matches ``schema`` (None: any JSON object), built with
        the same xgrammar machinery as ``knowlm extract --constrained``; a schema that cannot be compiled is a 400."""
        from knowlm.ie.constrained import CACHE, make_processor

        tokenizer, vocab = self.engine.tokenizer, self.engine.vocab_size
        try:
            grammar = CACHE.grammar(tokenizer, vocab, schema if schema is not None else {"type": "object"}, strict=schema is not None)
        except KnowlmError as exc:
            raise ApiError(400, str(exc)) from None
        except Exception as exc:  # xgrammar's own error for a schema it cannot compile, minus its source location
            reason = re.sub(r"^\[[^\]]*\]\s*\S+:\d+:\s*", "", str(exc).splitlines()[0] if str(exc) else "")
            raise ApiError(400, f"response_format: the JSON schema cannot be used: {reason[:200]}") from None
        return lambda: [make_processor([grammar])]

    def generator(self, target: Target, cancel: threading.Event | None = None) -> "EngineGenerator":
        return EngineGenerator(self, target, cancel)


class EngineGenerator(TemplatePrompts):
    """A :class:`knowlm.infer.TextGenerator` over a running backend (for ``extract_texts`` and the web UI).

    Prompts are submitted to the shared engine, at most ``batch_size`` at a time, so an
    extraction with many schema batches neither floods the queue nor starves other clients.
    """

    def __init__(self, service: Service, target: Target, cancel: threading.Event | None = None):
        self.service = service
        self.target = target
        self.template = target.template
        self.ie_wording = target.ie_wording
        self.tokenizer = service.engine.tokenizer
        self.max_context = service.engine.max_context
        self.vocab_size = service.engine.vocab_size
        self.cancel = cancel or threading.Event()
        self.last_outputs: list[str] = []  # raw model answers of the last generate() (the web UI shows them)

    def generate(
        self,
        prompts: Sequence[str],
        params: DecodingParams | None = None,
        batch_size: int = 16,
        logits_processor=None,
        progress=False,
    ) -> list[Generation]:
        params = (params or DecodingParams()).validate()
        window = max(1, batch_size)
        handles: list[RequestHandle | None] = [None] * len(prompts)
        results: list[Generation | None] = [None] * len(prompts)
        next_index = 0
        try:
            for index in range(len(prompts)):
                while next_index < len(prompts) and next_index < index + window:
                    processors = logits_processor([next_index]) if logits_processor else None
                    handles[next_index] = self.service.submit(self.target, prompts[next_index], params, processors=processors)
                    next_index += 1
                handle = handles[index]
                while not handle.done.wait(0.05):
                    if self.cancel.is_set():
                        raise ApiError(499, "client closed the request")
                results[index] = handle.result()
                if callable(progress):  # the caller's count (extraction: texts); no bar of our own in a server
                    progress([index], [results[index]])
        finally:
            for handle in handles:
                if handle is not None and not handle.done.is_set():
                    handle.cancel()
        self.last_outputs = [r.text for r in results]  # type: ignore[union-attr]
        return results  # type: ignore[return-value]


def chat_to_turns(messages: Sequence[Any]) -> tuple[str | None, list[tuple[str, str]], str]:
    """OpenAI messages -> (system, history of (user, assistant) turns, last user message).

    System/developer messages are joined into the system prompt; consecutive messages of one
    role are joined; the conversation must end with a user message.
    """
    system_parts: list[str] = []
    turns: list[list[str]] = []  # [role, text]
    for message in messages:
        role, text = message.role, message.text()
        if role in ("system", "developer"):
            system_parts.append(text)
            continue
        if turns and turns[-1][0] == role:
            turns[-1][1] += "\n" + text
        else:
            turns.append([role, text])
    if not turns or turns[-1][0] != "user":
        raise ApiError(400, "the last message must come from the user")
    history: list[tuple[str, str]] = []
    pending_user: str | None = None
    for role, text in turns[:-1]:
        if role == "user":
            pending_user = text
        else:
            history.append((pending_user or "", text))
            pending_user = None
    if pending_user is not None:  # cannot happen after merging, kept for safety
        history.append((pending_user, ""))
    return ("\n".join(system_parts) or None), history, turns[-1][1]
