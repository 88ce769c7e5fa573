"""Prompt templates: one registry shared by training and inference.

The template that trained a model is saved in its ``knowlm.json`` and found again at
inference time, so a model is always prompted the way it was tuned. A template turns an
instruction (plus optional input, system prompt and history) into the text the model
continues; training appends ``output + eos`` to exactly that text.

:func:`resolve_template` is the one place that decides which template a model gets.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from knowlm.errors import KnowlmError

log = logging.getLogger("knowlm.templates")

DEFAULT_TEMPLATE = "alpaca"  # KnowLM/ZhiXi's format: what a model without a manifest is assumed to speak

Turn = tuple[str, str]  # (user message, assistant answer)

ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ONEKE_SYSTEM = "You are a helpful assistant. 你是一个乐于助人的助手。"
CHAT_TEMPLATE = "chat_template"  # the template shipped in the tokenizer's config


def _user_text(instruction: str, input: str) -> str:
    return f"{instruction}\n\n{input}" if input else instruction


def _alpaca(instruction: str, input: str, system: str | None, history: Sequence[Turn]) -> str:
    past = "".join(_alpaca_turn(q, "") + a + "\n\n" for q, a in history)
    return past + _alpaca_turn(instruction, input, system)


def _alpaca_turn(instruction: str, input: str, system: str | None = None) -> str:
    body = ALPACA_WITH_INPUT.format(instruction=instruction, input=input) if input else ALPACA_NO_INPUT.format(
        instruction=instruction
    )
    return f"{system}\n\n{body}" if system else body


def _llama2(instruction: str, input: str, system: str | None, history: Sequence[Turn]) -> str:
    sys_block = f"<<SYS>>\n{system}\n<</SYS>>\n\n" if system else ""
    parts: list[str] = []
    turns = [*history, (_user_text(instruction, input), None)]
    for index, (user, answer) in enumerate(turns):
        prefix = sys_block if index == 0 else ""
        parts.append(f"[INST] {prefix}{user} [/INST]")
        if answer is not None:
            # Earlier turns end with </s><s>, written as text: the tokenizer maps them to EOS/BOS.
            parts.append(f" {answer} </s><s>")
    return "".join(parts)


def _chatml(instruction: str, input: str, system: str | None, history: Sequence[Turn]) -> str:
    text = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    for user, answer in history:
        text += f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n"
    return text + f"<|im_start|>user\n{_user_text(instruction, input)}<|im_end|>\n<|im_start|>assistant\n"


def _raw(instruction: str, input: str, system: str | None, history: Sequence[Turn]) -> str:
    past = "".join(f"{q}\n{a}\n" for q, a in history)
    head = f"{system}\n" if system else ""
    return head + past + (f"{instruction}\n{input}" if input else instruction)


def chat_messages(instruction: str, input: str, system: str | None, history: Sequence[Turn]) -> list[dict]:
    """The record as chat messages (what a tokenizer's chat template renders)."""
    messages = [{"role": "system", "content": system}] if system else []
    for user, answer in history:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return messages + [{"role": "user", "content": _user_text(instruction, input)}]


def render_chat_template(tokenizer, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """``tokenizer.apply_chat_template`` as text, without a leading BOS the tokenizer adds by itself."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise KnowlmError("template 'chat_template' needs a tokenizer with a chat template (tokenizer_config.json); "
                          "this one has none: choose alpaca, llama2, chatml or raw")
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and tokenizer("", add_special_tokens=True)["input_ids"][:1] == [tokenizer.bos_token_id]:
        text = text[len(bos):]
    return text


@dataclass(frozen=True)
class Template:
    """How one family of models is prompted."""

    name: str
    build: Callable[[str, str, str | None, Sequence[Turn]], str] | None
    default_system: str | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)  # text that ends an answer besides EOS
    description: str = ""
    turn_end: str = ""  # literal text closing an assistant turn inside a conversation (trained with it)

    @property
    def uses_tokenizer(self) -> bool:
        return self.build is None

    def render(self, instruction: str, input: str = "", system: str | None = None, history: Sequence[Turn] = (),
               tokenizer=None) -> str:
        system = self.default_system if system is None else system
        history = [tuple(t) for t in history]
        if self.uses_tokenizer:
            return render_chat_template(tokenizer, chat_messages(instruction, input or "", system or None, history))
        return self.build(instruction, input or "", system or None, history)


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in [
        Template("alpaca", _alpaca, stop=("### Instruction:",), description="KnowLM/ZhiXi and alpaca-lora: ### Response: split"),
        Template("llama2", _llama2, default_system=ONEKE_SYSTEM, stop=("[INST]",), description="LLaMA-2 chat / OneKE",
                 turn_end=" </s>"),
        Template("chatml", _chatml, default_system="You are a helpful assistant.", stop=("<|im_end|>",), description="ChatML",
                 turn_end="<|im_end|>"),
        Template("raw", _raw, description="plain completion for base models"),
        Template(CHAT_TEMPLATE, None, description="the tokenizer's own chat template (Llama-3, Qwen2.5, ...)"),
    ]
}


def get(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise KnowlmError(f"unknown prompt template {name!r}; choose one of: {', '.join(TEMPLATES)}") from None


def render(template: str, instruction: str, input: str = "", system: str | None = None, history: Sequence[Turn] = (),
           tokenizer=None) -> str:
    """The prompt up to where the model's answer starts (``chat_template`` needs the tokenizer)."""
    return get(template).render(instruction, input, system, history, tokenizer)


def resolve(template: str, tokenizer=None) -> str:
    """``auto`` -> ``chat_template`` when the tokenizer has one, else ``alpaca``; other names checked."""
    if template == "auto":
        return CHAT_TEMPLATE if getattr(tokenizer, "chat_template", None) else "alpaca"
    get(template)
    return template


def render_training_example(
    template: str, instruction: str, input: str, output: str, system: str | None = None, history: Sequence[Turn] = (),
    tokenizer=None,
) -> tuple[str, str]:
    """(prompt, answer) for SFT: the prompt is exactly what :func:`render` gives at inference."""
    return render(template, instruction, input, system, history, tokenizer), output


def manifest_template(model: str | os.PathLike, adapter: str | os.PathLike | None = None) -> tuple[str, Path] | None:
    """``(template, manifest path)`` recorded in the adapter's ``knowlm.json``, else the model's; None if neither
    records one (or they are hub ids). A corrupt manifest or an unknown name there is a KnowlmError naming the file."""
    from knowlm.models.manifest import MANIFEST, read_manifest

    for directory in (adapter, model):
        if not directory or not Path(directory).expanduser().is_dir():
            continue
        path = Path(directory).expanduser() / MANIFEST
        name = read_manifest(path.parent).get("template")
        if name in (None, ""):
            continue
        if not isinstance(name, str) or name not in TEMPLATES:
            raise KnowlmError(f"{path}: unknown prompt template {name!r}; choose one of: {', '.join(TEMPLATES)}")
        return name, path
    return None


def resolve_template(model: str | os.PathLike, adapter: str | os.PathLike | None = None, override: str | None = None) -> str:
    """The prompt template for ``model`` (+ ``adapter``), decided once, here.

    Order: the adapter's ``knowlm.json``, then the model's, then :data:`DEFAULT_TEMPLATE`. An explicit
    ``override`` (``--template``) wins, with a one-line warning when it contradicts a manifest: the user
    asked for it, but prompting a model differently from how it was tuned is usually a mistake.
    Unknown names fail here, before any weights load.
    """
    if override:
        get(override)
    recorded = manifest_template(model, adapter)
    if override:
        if recorded is not None and recorded[0] != override:
            log.warning("template %r overrides %r recorded in %s", override, recorded[0], recorded[1])
        return override
    return recorded[0] if recorded is not None else DEFAULT_TEMPLATE


def resolve_ie_wording(model: str | os.PathLike, adapter: str | os.PathLike | None = None, override: str | None = None) -> str:
    """The IE prompt wording (``full`` or ``compact``, see :func:`knowlm.ie.prompts.build_prompt`) a model
    was tuned on: ``override`` (``--wording``), else ``ie_wording`` in the adapter's ``knowlm.json``, else
    the model's, else ``full``. Extraction must ask a model in the words it learned, as with templates."""
    from knowlm.ie.prompts import check_wording
    from knowlm.models.manifest import read_manifest

    if override:
        return check_wording(override)
    for directory in (adapter, model):
        if directory and Path(directory).expanduser().is_dir():
            recorded = read_manifest(Path(directory).expanduser()).get("ie_wording")
            if recorded:
                return check_wording(recorded)
    return "full"
