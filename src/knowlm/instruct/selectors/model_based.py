"""Selectors that need a model: perplexity of the answer under a local model, and an LLM judge."""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from typing import ClassVar

from knowlm.errors import KnowlmError
from knowlm.instruct.selectors.base import Decision, SelectContext, Selector, need

# --- perplexity -----------------------------------------------------------------------------


def answer_ids(tokenizer, template: str, record: dict, max_length: int) -> tuple[list[int], int]:
    """(ids, prompt length): the prompt exactly as training renders it, then output + EOS (what SFT
    learns), cut to ``max_length``."""
    from knowlm.models.templates import render_training_example

    prompt, answer = render_training_example(template, record["instruction"], record.get("input") or "",
                                             record.get("output") or "", record.get("system"), record.get("history") or ())
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    full = tokenizer(prompt + answer, add_special_tokens=True)["input_ids"]
    tail = full[len(prompt_ids):] if full[: len(prompt_ids)] == prompt_ids else tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = list(prompt_ids) + list(tail) + [tokenizer.eos_token_id]
    return ids[:max_length], len(prompt_ids)


def answer_nll(model, tokenizer, template: str, records: list[dict], batch_size: int = 8, max_length: int = 1024,
               progress: bool = False) -> list[float | None]:
    """Mean negative log-likelihood per answer token of each record's output given its prompt
    (None when truncation leaves no answer token). Length-sorted, right-padded batches."""
    import torch

    encoded = [answer_ids(tokenizer, template, r, max_length) for r in records]
    order = sorted(range(len(records)), key=lambda i: len(encoded[i][0]), reverse=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    result: list[float | None] = [None] * len(records)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="perplexity", unit="batch", leave=False, disable=None)
    for batch in batches:
        width = len(encoded[batch[0]][0])
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for row, i in enumerate(batch):
            seq, prompt_len = encoded[i]
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
            labels[row, prompt_len : len(seq)] = torch.tensor(seq[prompt_len:], dtype=torch.long)
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(device)
        nll = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                                                ignore_index=-100, reduction="none").view(shift_labels.shape)
        counts = (shift_labels != -100).sum(dim=1)
        sums = nll.sum(dim=1)
        for row, i in enumerate(batch):
            if counts[row] > 0:
                result[i] = float(sums[row] / counts[row])
    return result


@dataclass
class PerplexitySelector(Selector):
    """Perplexity of the output given the prompt under a local model (``model``, else ``--model``).
    Drops above ``max_perplexity`` / below ``min_perplexity`` when set; without bounds it drops
    outliers: log-perplexity above median + ``mad_k`` × MAD (garbled or off-topic answers)."""

    name: ClassVar[str] = "perplexity"
    model: str | None = None
    adapter: str | None = None
    template: str | None = None
    max_perplexity: float | None = None
    min_perplexity: float | None = None
    mad_k: float = 3.0
    batch_size: int = 8
    max_length: int = 1024

    def check(self) -> None:
        need(self.batch_size >= 1 and self.max_length >= 2, "perplexity: batch_size >= 1 and max_length >= 2")
        need(self.mad_k > 0, "perplexity: mad_k must be > 0")

    def _generator(self, context: SelectContext):
        """The step's ``model``, else the one the caller handed in, else ``--model`` (an HF generator: we need logits)."""
        from knowlm.infer import load_generator

        if self.model is None and context.generator is not None:
            return context.generator
        model = self.model or context.model
        if not model:
            raise KnowlmError("the perplexity selector needs a local model: pass --model or give `model:` in the step")
        return load_generator(model, self.adapter or context.adapter, self.template)

    def decide(self, records: list[dict], context: SelectContext) -> list[Decision]:
        generator = self._generator(context)
        template = self.template or generator.template  # a step's template also applies to a handed-in generator
        nll = answer_nll(generator.model, generator.tokenizer, template, records, self.batch_size, self.max_length, context.progress)
        high, low = self.max_perplexity, self.min_perplexity
        if high is None and low is None:
            logs = [v for v in nll if v is not None]
            if len(logs) >= 3:
                median = statistics.median(logs)
                mad = statistics.median(abs(v - median) for v in logs) or 1e-6
                high = math.exp(median + self.mad_k * mad)
        out = []
        for value in nll:
            if value is None:
                out.append(Decision(True, None))
                continue
            ppl = round(math.exp(min(value, 700.0)), 4)
            if high is not None and ppl > high:
                out.append(Decision(False, ppl, "perplexity_too_high"))
            elif low is not None and ppl < low:
                out.append(Decision(False, ppl, "perplexity_too_low"))
            else:
                out.append(Decision(True, ppl))
        return out


# --- LLM judge ------------------------------------------------------------------------------

JUDGE_PROMPT = (
    "Rate the quality of the response to the instruction below on a scale from 1 (useless, wrong or "
    "off-topic) to 5 (correct, helpful and complete). Answer with \"Score: N\" and nothing else.\n\n"
    "Instruction:\n{instruction}\n\n{input_block}Response:\n{output}\n\nScore:"
)
_NUM = r"([1-5](?:\.\d+)?)"
_SCORE_PATTERNS = [
    re.compile(r"(?:score|rating|grade|评分|得分|分数|打分)\s*(?:is|of|was|为|是)?\s*[:：=]?\s*\**\s*" + _NUM + r"(?![\d.]*\d)", re.IGNORECASE),
    re.compile(_NUM + r"\s*(?:/|out of|of)\s*5(?!\d)", re.IGNORECASE),
    re.compile(_NUM + r"\s*分"),
]
_STANDALONE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)(?![\d.]*\d)")


def parse_score(text: str | None) -> float | None:
    """A 1-5 score from a judge's free-text answer, or None. Tries "Score: 4", "4/5", "4 out of 5",
    "4分", then a lone number when it is the only one in the answer."""
    if not text:
        return None
    for pattern in _SCORE_PATTERNS:
        match = pattern.search(text)
        if match:
            value = float(match.group(1))
            return value if 1.0 <= value <= 5.0 else None
    numbers = _STANDALONE.findall(text)
    if len(numbers) == 1:
        value = float(numbers[0])
        return value if 1.0 <= value <= 5.0 else None
    return None


@dataclass
class JudgeSelector(Selector):
    """Ask an LLM (the endpoint from --api-base, or the local --model) to rate each record 1-5 and
    keep those scoring at least ``min_score``. Unparseable answers and failed requests are kept
    (``on_failure: keep``) or dropped (``drop``); both are counted."""

    name: ClassVar[str] = "judge"
    min_score: float = 3.0
    on_failure: str = "keep"
    prompt: str = JUDGE_PROMPT
    max_tokens: int = 32
    temperature: float = 0.0
    api_base: str | None = None
    api_key: str | None = None
    api_model: str | None = None
    model: str | None = None

    def check(self) -> None:
        need(self.on_failure in ("keep", "drop"), "judge: on_failure must be keep or drop")
        need(1.0 <= self.min_score <= 5.0, "judge: min_score must be between 1 and 5")
        need("{output}" in self.prompt and "{instruction}" in self.prompt, "judge: prompt must contain {instruction} and {output}")

    def _llm(self, context: SelectContext):
        from knowlm.instruct.llm import make_llm

        if self.api_base or self.model:
            return make_llm(api_base=self.api_base, model=self.model, api_key=self.api_key, api_model=self.api_model)
        if context.llm is not None:
            return context.llm
        if context.api_base or context.model:
            context.llm = make_llm(api_base=context.api_base, model=None if context.api_base else context.model,
                                   api_key=context.api_key, api_model=context.api_model, adapter=context.adapter)
            return context.llm
        raise KnowlmError("the judge selector needs a model: pass --api-base (an endpoint) or --model")

    def decide(self, records: list[dict], context: SelectContext) -> list[Decision]:
        from knowlm.instruct.llm import LLMParams

        llm = self._llm(context)
        prompts = []
        for r in records:
            given = r.get("input") or ""
            prompts.append(self.prompt.format(instruction=r["instruction"], input=given, output=r.get("output") or "",
                                              input_block=f"Input:\n{given}\n\n" if given else ""))
        answers = llm.generate(prompts, LLMParams(max_tokens=self.max_tokens, temperature=self.temperature))
        out = []
        for answer in answers:
            score = parse_score(answer)
            if score is None:
                reason = "judge_request_failed" if answer is None else "judge_unparsed"
                keep = self.on_failure == "keep"
                out.append(Decision(keep, None, None if keep else reason, note=reason if keep else None))
            elif score < self.min_score:
                out.append(Decision(False, score, "low_judge_score"))
            else:
                out.append(Decision(True, score))
        return out
