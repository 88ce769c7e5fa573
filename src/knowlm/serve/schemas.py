"""Request bodies of every route, with hard limits, as pydantic models (they also make /openapi.json).

Bounds here are absolute caps that keep a request from asking for unbounded work; the
server's configurable limits (``ServeLimits``) are checked on top of them.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from knowlm.serve.errors import ApiError

MAX_TEXT_CHARS = 200_000  # one prompt / instruction / message
MAX_TOKENS_CAP = 32_768
MAX_STOP = 4
MAX_STOP_CHARS = 64
MAX_MESSAGES = 256
MAX_SCHEMA_ITEMS = 200
MAX_EXTRACT_CHARS = 50_000

Stop = Union[str, list[str]]
StopField = Field(None, description=f"up to {MAX_STOP} strings that end the answer (not included in it)")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KnowLMParameters(_Strict):
    """KnowLM's ``parameters`` object (vLLM SamplingParams names)."""

    temperature: float | None = Field(None, ge=0, le=10, description="0 = greedy")
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1, le=10_000, description="0 or -1 disables top-k")
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    num_beams: int | None = Field(None, ge=1, le=8)
    repetition_penalty: float | None = Field(None, gt=0, le=10)
    stop: Stop | None = StopField
    seed: int | None = Field(None, ge=0, le=2**62)
    do_sample: bool | None = None

    def decoding_fields(self) -> dict:
        """The fields :meth:`knowlm.serve.Service.params` turns into DecodingParams."""
        return self.model_dump(exclude_none=True)


class GenerateRequest(_Strict):
    """``POST /generate``: KnowLM's request shape; the prompt is built with the model's template."""

    instruction: str = Field(..., max_length=MAX_TEXT_CHARS)
    input: str = Field("", max_length=MAX_TEXT_CHARS)
    parameters: KnowLMParameters = Field(default_factory=KnowLMParameters)
    model: str | None = Field(None, max_length=256, description="base model or adapter name (default: the served default)")


class GenerateResponse(BaseModel):
    generated_text: str
    num_output_tokens_cf: int
    error: str | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


class _OpenAIBase(BaseModel):
    """Fields shared by completions and chat; unknown fields are ignored as OpenAI clients send extras."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, max_length=256)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1, le=10_000, description="extension (vLLM)")
    repetition_penalty: float | None = Field(None, gt=0, le=10, description="extension (vLLM)")
    n: int = Field(1, ge=1, le=1, description="only n=1 is supported")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop | None = StopField
    seed: int | None = Field(None, ge=0, le=2**62)
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="only 0 is supported")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="only 0 is supported")
    user: str | None = Field(None, max_length=256)

    def decoding_fields(self) -> dict:
        """The fields :meth:`knowlm.serve.Service.params` turns into DecodingParams (OpenAI defaults)."""
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise ApiError(400, f"{name} is not supported (only 0)")
        return {
            "max_tokens": self.max_tokens,
            "temperature": 1.0 if self.temperature is None else self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
            "stop": self.stop,
            "seed": self.seed,
        }


class CompletionRequest(_OpenAIBase):
    """``POST /v1/completions``: the prompt is sent to the model as is (no template)."""

    prompt: Union[str, list[str]] = Field(..., description="a string (or a list holding exactly one)")
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=0, description="not supported")


class TextPart(_Strict):
    type: Literal["text"]
    text: str = Field(..., max_length=MAX_TEXT_CHARS)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart], None] = Field(None)
    name: str | None = Field(None, max_length=256)


class ChatRequest(_OpenAIBase):
    """``POST /v1/chat/completions``: messages map onto the template's (system, history, question)."""

    messages: list[ChatMessage] = Field(..., min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    logprobs: bool | None = Field(None, description="not supported")

    def decoding_fields(self) -> dict:
        fields = super().decoding_fields()
        if self.max_completion_tokens is not None:
            fields["max_tokens"] = self.max_completion_tokens
        return fields


class ExtractRequest(_Strict):
    """``POST /extract``: one text, one task, one schema -> an IE record (DESIGN §3)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    text: str = Field(..., max_length=MAX_EXTRACT_CHARS)
    task: Literal["ner", "re", "ee"]
    schema_: Union[list[Union[str, dict[str, Any]]], dict[str, Any]] = Field(
        ..., alias="schema", description="type / relation names, {name: description}, or IEPile EE event types"
    )
    lang: Literal["auto", "zh", "en"] = "auto"
    style: Literal["json", "knowlm"] = "json"
    split_num: int | None = Field(None, ge=1, le=MAX_SCHEMA_ITEMS, description="schema items per prompt")
    constrained: bool = Field(False, description="grammar-constrained JSON decoding (needs xgrammar)")
    id: str | None = Field(None, max_length=256)
    model: str | None = Field(None, max_length=256)
    parameters: KnowLMParameters | None = None
