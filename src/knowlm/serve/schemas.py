"""Request bodies of the KnowLM and extraction routes, with hard limits, as pydantic models
(they also make /openapi.json); the OpenAI bodies are in :mod:`knowlm.serve.openai_schemas`.

Bounds here are absolute caps that keep a request from asking for unbounded work; the server's
configurable limits (``ServeLimits``) are checked on top of them. Every body is checked for lone
UTF-16 surrogates (``"\\ud800"`` is valid JSON but not text a tokenizer or a JSON encoder accepts):
they are a 400 naming the field, like any other invalid value.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_TEXT_CHARS = 200_000  # one prompt / instruction / message
MAX_TOKENS_CAP = 32_768
MAX_STOP = 4
MAX_STOP_CHARS = 64
MAX_STOP_TOKEN_IDS = 64
MAX_MESSAGES = 256
MAX_SCHEMA_ITEMS = 200
MAX_EXTRACT_CHARS = 50_000
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1

Stop = Union[str, list[str]]
StopField = Field(None, description=f"up to {MAX_STOP} strings that end the answer (not included in it)")


def lone_surrogate_at(value: Any, path: str = "") -> str | None:
    """Where in a parsed JSON value a string (or key) holds a lone UTF-16 surrogate, if anywhere."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            where = lone_surrogate_at(key, path or "body") or lone_surrogate_at(item, f"{path}.{key}" if path else str(key))
            if where:
                return where
    if isinstance(value, list):
        for index, item in enumerate(value):
            where = lone_surrogate_at(item, f"{path}[{index}]")
            if where:
                return where
    return None


class Body(BaseModel):
    """A request body: unknown fields are refused by name, values must have their documented JSON type
    (no ``true`` for a number, no ``"5"`` for an integer), and text must be valid Unicode."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        where = lone_surrogate_at(data)
        if where:
            raise ValueError(f"{where} contains a lone UTF-16 surrogate (e.g. \\ud800), which is not valid text")
        return data


class KnowLMParameters(Body):
    """KnowLM's ``parameters`` object: every key KnowLM's server reads (vLLM SamplingParams names)."""

    temperature: float | None = Field(None, ge=0, le=10, description="0 = greedy")
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1, le=10_000, description="0 or -1 disables top-k")
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    presence_penalty: float | None = Field(None, ge=-2, le=2, description="subtracted once from tokens already in the answer")
    frequency_penalty: float | None = Field(None, ge=-2, le=2, description="subtracted per occurrence in the answer")
    num_beams: int | None = Field(None, ge=1, le=8)
    repetition_penalty: float | None = Field(None, gt=0, le=10)
    stop: Stop | None = StopField
    stop_token_ids: list[int] | None = Field(None, max_length=MAX_STOP_TOKEN_IDS, description="token ids that end the answer")
    min_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS_CAP, description="no EOS or stop before this many tokens")
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    do_sample: bool | None = None

    def decoding_fields(self) -> dict:
        """The fields :meth:`knowlm.serve.Service.params` turns into DecodingParams."""
        return self.model_dump(exclude_none=True)


class GenerateRequest(Body):
    """``POST /generate``: KnowLM's request shape; the prompt is built with the model's template.

    Unknown top-level keys are ignored, as KnowLM's server does; unknown ``parameters`` are refused."""

    model_config = ConfigDict(extra="ignore")

    instruction: str = Field(..., max_length=MAX_TEXT_CHARS)
    input: str | None = Field("", max_length=MAX_TEXT_CHARS)
    parameters: KnowLMParameters | None = None
    model: str | None = Field(None, max_length=256, description="base model or adapter name (default: the served default)")


class GenerateResponse(BaseModel):
    generated_text: str
    num_output_tokens_cf: int
    error: str | None = None


class ExtractRequest(Body):
    """``POST /extract``: one text, one task, one schema -> an IE record (DESIGN §3)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    text: str = Field(..., max_length=MAX_EXTRACT_CHARS)
    task: Literal["ner", "re", "ee", "eet", "eea", "spo"] = Field(
        ..., description="ner, re, ee; eet (event types -> triggers), eea (arguments of given event types), spo (typed relations)"
    )
    schema_: Union[list[Union[str, dict[str, Any]]], dict[str, Any]] = Field(
        ..., alias="schema", description="type / relation names, {name: description}, IEPile event types, or SPO {subject_type, predicate, object_type}"
    )
    lang: Literal["auto", "zh", "en"] = "auto"
    style: Literal["json", "knowlm"] = "json"
    split_num: int | None = Field(None, ge=1, le=MAX_SCHEMA_ITEMS, description="schema items per prompt")
    constrained: bool = Field(False, description="grammar-constrained JSON decoding (needs xgrammar)")
    id: str | None = Field(None, max_length=256)
    model: str | None = Field(None, max_length=256)
    parameters: KnowLMParameters | None = None
