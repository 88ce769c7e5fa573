"""A scripted :class:`knowlm.infer.TextGenerator` for extraction tests: the test decides every answer.

Torch-free on purpose (no ``knowlm.infer`` import): the layering test runs an extraction with it while
torch is blocked. Tokens are characters, so budgets and chunking are easy to reason about.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable


class CharTokenizer:
    """One token per character."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(range(len(text)))}


@dataclass
class Answer:
    """Shaped like ``knowlm.infer.Generation``."""

    text: str
    num_tokens: int
    finish_reason: str = "stop"
    prompt_tokens: int = 0


@dataclass
class ScriptedGenerator:
    """Answers each prompt with ``script(request)``: a string, or ``(string, finish_reason)``.

    ``request`` is the IE prompt object the extraction built (``{"instruction", "schema", "input"}``
    for the json style). Every ``generate`` call is recorded with its prompts and parameters.
    """

    script: Callable[[dict], object]
    template: str = "scripted"
    stop: tuple[str, ...] = ("<|next|>",)
    max_context: int = 4096
    vocab_size: int = 256
    tokenizer: CharTokenizer = field(default_factory=CharTokenizer)
    calls: list = field(default_factory=list)  # (prompts, params, batch_size) per generate()

    def prompt(self, instruction, input="", system=None, history=()):
        return f"<<{instruction}>>{input}"

    def generate(self, prompts, params=None, batch_size=16, logits_processor=None, progress=False):
        self.calls.append((list(prompts), params, batch_size))
        answers = []
        for prompt in prompts:
            request = json.loads(re.fullmatch(r"<<(.*)>>", prompt, re.S).group(1))
            reply = self.script(request)
            text, reason = reply if isinstance(reply, tuple) else (reply, "stop")
            answers.append(Answer(text, len(text), reason, len(prompt)))
        if callable(progress):  # as the HF generator reports: one call per batch, in order
            for start in range(0, len(answers), batch_size):
                indices = list(range(start, min(start + batch_size, len(answers))))
                progress(indices, [answers[i] for i in indices])
        return answers


def capitalised_names(request: dict) -> str:
    """The gold NER answer when every capitalised word is a 'name' (json style)."""
    words = re.findall(r"\b[A-Z][a-z]+\b", request["input"])
    return json.dumps({item: words if item == "name" else [] for item in request["schema"]}, ensure_ascii=False)
