"""Model access for generators and the judge: any OpenAI-compatible endpoint, or a local model.

Both take a list of prompts and return one answer per prompt, ``None`` where a request failed
for good. The endpoint client retries connection errors, timeouts, 429 and 5xx with exponential
back-off and counts every retry and failure, so a long run survives a flaky server and says
what it lost. Errors no retry can fix (wrong key, unknown model) stop the run with one line.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from knowlm.errors import KnowlmError

MODES = ("chat", "completion")


@dataclass
class LLMParams:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


@dataclass
class CallStats:
    requests: int = 0  # prompts asked
    answered: int = 0
    retries: int = 0
    failed: int = 0
    errors: Counter = field(default_factory=Counter)  # error kind -> count (retried or not)

    def as_dict(self) -> dict:
        return {"requests": self.requests, "answered": self.answered, "retries": self.retries,
                "failed": self.failed, "errors": dict(self.errors)}


class LLM(Protocol):
    name: str
    stats: CallStats

    def generate(self, prompts: Sequence[str], params: LLMParams) -> list[str | None]: ...


def normalise_base(url: str) -> str:
    """``http://host:8090`` and ``http://host:8090/v1/`` both mean the ``/v1`` routes."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


class EndpointLLM:
    """An OpenAI-compatible server (``knowlm serve``, vLLM, llama.cpp, a hosted API) via the official client."""

    def __init__(self, api_base: str, api_key: str | None = None, model: str | None = None, mode: str = "chat",
                 concurrency: int = 4, max_retries: int = 5, backoff: float = 0.5, max_backoff: float = 30.0,
                 timeout: float = 300.0):
        try:
            import openai
        except ImportError:
            raise KnowlmError("--api-base needs the official openai client: pip install 'knowlm[serve]'") from None

        if mode not in MODES:
            raise KnowlmError(f"unknown API mode {mode!r}; choose chat or completion")
        self.client = openai.OpenAI(base_url=normalise_base(api_base), api_key=api_key or "EMPTY", max_retries=0, timeout=timeout)
        self.api_base = api_base
        self.mode = mode
        self.concurrency = max(1, concurrency)
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.stats = CallStats()
        self._model = model
        self._lock = threading.Lock()
        self._fatal: KnowlmError | None = None

    @property
    def name(self) -> str:
        return self.model

    @property
    def model(self) -> str:
        if self._model is None:
            models = self._with_retries(lambda: self.client.models.list())
            ids = [m.id for m in getattr(models, "data", [])] if models is not None else []
            if not ids:
                self._raise_fatal()
                raise KnowlmError(f"{self.api_base}: cannot list models; pass --api-model")
            self._model = ids[0]
        return self._model

    def _kind(self, exc: Exception) -> tuple[str, bool]:
        """(error kind, retry?) for an exception from the client."""
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return "timeout", True
        if isinstance(exc, openai.APIConnectionError):
            return "connection", True
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status == 429 or status >= 500:
                return f"http_{status}", True
            if status in (401, 403):
                self._fatal = KnowlmError(f"{self.api_base} refused the request ({status}): check --api-key")
            elif status == 404:
                self._fatal = KnowlmError(f"{self.api_base} answered 404: wrong --api-base or unknown --api-model {self._model!r}")
            return f"http_{status}", False
        raise exc  # a bug, not a server problem

    def _with_retries(self, call):
        for attempt in range(self.max_retries + 1):
            if self._fatal:
                return None
            try:
                return call()
            except Exception as exc:  # noqa: BLE001 - classified below, unknown kinds re-raised
                kind, retry = self._kind(exc)
                with self._lock:
                    self.stats.errors[kind] += 1
                if not retry or attempt == self.max_retries:
                    return None
                with self._lock:
                    self.stats.retries += 1
                delay = min(self.max_backoff, self.backoff * 2**attempt)
                time.sleep(delay * (1.0 + 0.25 * random.random()))
        return None

    def _raise_fatal(self) -> None:
        if self._fatal:
            raise self._fatal

    def _one(self, prompt: str, params: LLMParams, offset: int = 0) -> str | None:
        extra = {"seed": params.seed + offset} if params.seed is not None else {}
        if params.stop:
            extra["stop"] = list(params.stop)[:4]
        if self.mode == "chat":
            def call():
                response = self.client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": prompt}], max_tokens=params.max_tokens,
                    temperature=params.temperature, top_p=params.top_p, **extra)
                return response.choices[0].message.content or ""
        else:
            def call():
                response = self.client.completions.create(
                    model=self.model, prompt=prompt, max_tokens=params.max_tokens,
                    temperature=params.temperature, top_p=params.top_p, **extra)
                return response.choices[0].text or ""
        answer = self._with_retries(call)
        with self._lock:
            if answer is None:
                self.stats.failed += 1
            else:
                self.stats.answered += 1
        return answer

    def generate(self, prompts: Sequence[str], params: LLMParams) -> list[str | None]:
        self._raise_fatal()
        _ = self.model  # resolve the model name once, before the threads start
        self._raise_fatal()
        self.stats.requests += len(prompts)
        if self.concurrency == 1 or len(prompts) <= 1:
            answers = [self._one(p, params, i) for i, p in enumerate(prompts)]
        else:  # one seed per prompt: equal seeds would make sampled answers look alike
            with ThreadPoolExecutor(min(self.concurrency, len(prompts))) as pool:
                answers = list(pool.map(lambda ip: self._one(ip[1], params, ip[0]), enumerate(prompts)))
        self._raise_fatal()
        return answers


class LocalLLM:
    """A local model through the project's batched engine; ``chat`` wraps prompts in its template.

    ``generator``: an already-built :class:`knowlm.infer.TextGenerator` (tests, library callers);
    otherwise ``model`` (+ ``adapter``, ``template``) is loaded with ``knowlm.infer.load_generator``.
    """

    def __init__(self, model: str, adapter: str | None = None, template: str | None = None, mode: str = "chat",
                 batch_size: int = 8, dtype: str = "auto", device: str = "auto", generator=None):
        from knowlm.infer import load_generator

        if mode not in MODES:
            raise KnowlmError(f"unknown mode {mode!r}; choose chat or completion")
        self.generator = generator if generator is not None else load_generator(model, adapter, template, dtype=dtype, device=device)
        self.name = str(model)
        self.mode = mode
        self.batch_size = batch_size
        self.stats = CallStats()

    def generate(self, prompts: Sequence[str], params: LLMParams) -> list[str | None]:
        from knowlm.decoding import DecodingParams

        texts = [self.generator.prompt(p) if self.mode == "chat" else p for p in prompts]
        decoding = DecodingParams(max_new_tokens=params.max_tokens, temperature=params.temperature,
                                  top_p=params.top_p, seed=params.seed, stop=list(params.stop))
        results = self.generator.generate(texts, decoding, batch_size=self.batch_size)
        self.stats.requests += len(prompts)
        self.stats.answered += len(prompts)
        return [r.text for r in results]


def make_llm(api_base: str | None = None, model: str | None = None, api_key: str | None = None,
             api_model: str | None = None, mode: str = "chat", concurrency: int = 4, **local) -> LLM:
    """Exactly one of ``api_base`` (an endpoint) or ``model`` (a local model path / hub id)."""
    if bool(api_base) == bool(model):
        raise KnowlmError("give exactly one of --api-base (an OpenAI-compatible endpoint) or --model (a local model)")
    if api_base:
        return EndpointLLM(api_base, api_key=api_key, model=api_model, mode=mode, concurrency=concurrency)
    return LocalLLM(model, mode=mode, **local)
