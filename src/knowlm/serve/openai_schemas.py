"""Request bodies of the OpenAI-compatible routes (and vLLM's ``/tokenize``, ``/detokenize``).

Every option OpenAI documents is either honoured or refused with a 400 that names it; unknown fields
are refused too, as OpenAI does, so a client never gets plain text where it asked for something else.
vLLM's extensions that knowlm implements (``top_k``, ``repetition_penalty``, ``stop_token_ids``,
``min_tokens``) are accepted under vLLM's names.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Union

from pydantic import Field, field_validator, model_validator

from knowlm.serve.schemas import MAX_MESSAGES, MAX_STOP_TOKEN_IDS, MAX_TEXT_CHARS, MAX_TOKENS_CAP, SEED_MAX, SEED_MIN, Body, Stop, StopField

MAX_N = 8  # choices per prompt
MAX_PROMPTS = 16  # prompts per /v1/completions request
MAX_LOGPROBS = 20
MAX_LOGIT_BIAS = 300
MAX_TOKEN_IDS = 100_000  # /detokenize

# OpenAI options this server does not implement -> the values that ask for nothing (accepted as such).
UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "tools": lambda v: not v,
    "tool_choice": lambda v: v in (None, "none"),
    "parallel_tool_calls": lambda v: v is None,
    "functions": lambda v: not v,
    "function_call": lambda v: v in (None, "none"),
    "audio": lambda v: v is None,
    "modalities": lambda v: v in (None, ["text"]),
    "prediction": lambda v: v is None,
    "reasoning_effort": lambda v: v is None,
    "web_search_options": lambda v: v is None,
    "store": lambda v: v in (None, False),
    "metadata": lambda v: not v,
    "service_tier": lambda v: v in (None, "auto", "default"),
    "verbosity": lambda v: v is None,
    "prompt_cache_key": lambda v: v is None,
    "suffix": lambda v: v in (None, ""),
}


def refuse_unsupported(data: Any, names=UNSUPPORTED) -> Any:
    """Drop unsupported options sent with their do-nothing value; refuse any other value by name."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for name, harmless in names.items():
        if name in data:
            if not harmless(data[name]):
                raise ValueError(f"{name} is not supported by this server")
            del data[name]
    return data


class StreamOptions(Body):
    include_usage: bool = False


class JsonSchemaFormat(Body):
    name: str = Field("response", max_length=64)
    description: str | None = Field(None, max_length=4096)
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema", description="a JSON Schema the answer must match")
    strict: bool | None = None


class ResponseFormat(Body):
    """``text`` (default), ``json_object`` (any JSON object) or ``json_schema``: grammar-constrained output."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self):
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs a 'json_schema' object")
        return self


class OpenAIRequest(Body):
    """Fields shared by completions and chat."""

    model: str | None = Field(None, max_length=256)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1, le=10_000, description="extension (vLLM); 0 or -1 disables")
    repetition_penalty: float | None = Field(None, gt=0, le=10, description="extension (vLLM)")
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = Field(None, max_length=MAX_LOGIT_BIAS, description="token id -> bias in [-100, 100]")
    n: int = Field(1, ge=1, le=MAX_N, description="choices to generate")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop | None = StopField
    stop_token_ids: list[int] | None = Field(None, max_length=MAX_STOP_TOKEN_IDS, description="extension (vLLM)")
    min_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS_CAP, description="extension (vLLM): no EOS or stop before this many tokens")
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    response_format: ResponseFormat | None = None
    user: str | None = Field(None, max_length=256)
    safety_identifier: str | None = Field(None, max_length=256)

    @model_validator(mode="before")
    @classmethod
    def _unsupported(cls, data: Any) -> Any:
        return refuse_unsupported(data)

    @field_validator("logit_bias")
    @classmethod
    def _bias_keys(cls, value):
        for key, bias in (value or {}).items():
            if not key.isdigit():
                raise ValueError(f"logit_bias keys are token ids, got {key!r}")
            if not -100 <= bias <= 100:
                raise ValueError("logit_bias values must be in [-100, 100]")
        return value

    @model_validator(mode="after")
    def _stream_options_need_stream(self):
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self

    def decoding_fields(self) -> dict:
        """The fields :meth:`knowlm.serve.Service.params` turns into DecodingParams (OpenAI defaults)."""
        return {
            "max_tokens": self.max_tokens,
            "temperature": 1.0 if self.temperature is None else self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "logit_bias": {int(k): v for k, v in self.logit_bias.items()} if self.logit_bias else None,
            "stop": self.stop,
            "stop_token_ids": self.stop_token_ids,
            "min_tokens": self.min_tokens,
            "seed": self.seed,
        }


class CompletionRequest(OpenAIRequest):
    """``POST /v1/completions``: each prompt is sent to the model as is (no template)."""

    prompt: Union[str, list[str]] = Field(..., description=f"a string or a list of up to {MAX_PROMPTS} strings")
    echo: bool = Field(False, description="prefix each answer with its prompt")
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS, description="log-probabilities of each token and this many alternatives")
    best_of: int | None = Field(None, ge=1, le=MAX_N, description="only best_of == n (no server-side ranking)")

    @field_validator("prompt", mode="before")
    @classmethod
    def _text_prompts(cls, value):
        if isinstance(value, list):
            if not value or len(value) > MAX_PROMPTS:
                raise ValueError(f"prompt: give 1 to {MAX_PROMPTS} prompts")
            if any(isinstance(v, (int, list)) for v in value):
                raise ValueError("prompts as token ids are not supported; send text")
            if any(isinstance(v, str) and len(v) > MAX_TEXT_CHARS for v in value):
                raise ValueError(f"prompt longer than {MAX_TEXT_CHARS} characters")
        elif isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
            raise ValueError(f"prompt longer than {MAX_TEXT_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _combinations(self):
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of is not supported by this server (only best_of equal to n)")
        if self.echo and self.logprobs is not None:
            raise ValueError("echo together with logprobs is not supported (no prompt log-probabilities)")
        return self

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class TextPart(Body):
    type: Literal["text"]
    text: str = Field(..., max_length=MAX_TEXT_CHARS)

    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") not in (None, "text"):
            raise ValueError(f"content parts of type {data.get('type')!r} are not supported (text only)")
        return data


class ChatMessage(Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart], None] = Field(None)
    name: str | None = Field(None, max_length=256)

    @model_validator(mode="before")
    @classmethod
    def _plain_messages(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if data.get("role") in ("tool", "function"):
                raise ValueError(f"messages with role {data['role']!r} are not supported (no tool calling)")
            data = refuse_unsupported(data, {"tool_calls": lambda v: not v, "function_call": lambda v: v is None,
                                             "refusal": lambda v: v is None, "audio": lambda v: v is None})
        return data

    def text(self) -> str:
        return "".join(part.text for part in self.content) if isinstance(self.content, list) else self.content or ""


class ChatRequest(OpenAIRequest):
    """``POST /v1/chat/completions``: messages map onto the template's (system, history, question)."""

    messages: list[ChatMessage] = Field(..., min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    logprobs: bool | None = Field(None, description="log-probabilities of each answer token")
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS, description="alternatives per token (needs logprobs)")

    @model_validator(mode="after")
    def _top_needs_logprobs(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def decoding_fields(self) -> dict:
        fields = super().decoding_fields()
        if self.max_completion_tokens is not None:
            fields["max_tokens"] = self.max_completion_tokens
        return fields


class TokenizeRequest(Body):
    """``POST /tokenize`` (vLLM): a raw ``prompt``, or chat ``messages`` rendered with the model's template."""

    model: str | None = Field(None, max_length=256)
    prompt: str | None = Field(None, max_length=MAX_TEXT_CHARS)
    messages: list[ChatMessage] | None = Field(None, min_length=1, max_length=MAX_MESSAGES)
    add_special_tokens: bool = Field(True, description="prepend BOS, as generation does")
    add_generation_prompt: Literal[True] = Field(True, description="chat prompts always end where the answer starts")
    return_token_strs: bool = False

    @model_validator(mode="after")
    def _one_input(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        return self


class DetokenizeRequest(Body):
    """``POST /detokenize`` (vLLM): token ids -> text."""

    model: str | None = Field(None, max_length=256)
    tokens: list[int] = Field(..., max_length=MAX_TOKEN_IDS)
