"""Batched generation with Hugging Face models.

Prompts are sorted by length and decoded in left-padded batches, so a batch of 16 costs little
more than one prompt; results come back in the caller's order with only the new text (no prompt
echo, no EOS, cut at stop strings). ``logits_processor`` lets callers constrain decoding per
prompt (the extraction layer uses it for schema-constrained JSON).
"""

from __future__ import annotations

from typing import Sequence

from knowlm.decoding import DecodingParams
from knowlm.infer.generator import Generation, ProcessorFactory, TemplatePrompts


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Text before the earliest stop string, and whether one was found."""
    cuts = [text.find(s) for s in stop if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


class Generator(TemplatePrompts):
    """The Hugging Face :class:`~knowlm.infer.generator.TextGenerator`: shared by the CLI, case runner,
    extraction and evaluation. Build it with :func:`knowlm.infer.load_generator`, which resolves the
    template; handed a model directly, it uses the template :func:`knowlm.models.load` recorded.

    The tokenizer's padding side is never changed: batches are left-padded per call, so callers that
    share the tokenizer and pad it differently (training, editing) are not affected.
    """

    def __init__(self, model, tokenizer, template: str | None = None):
        from knowlm.models.loading import prepare_tokenizer
        from knowlm.models.templates import DEFAULT_TEMPLATE, get

        self.model = model
        self.tokenizer = prepare_tokenizer(tokenizer)
        self.template = get(template or getattr(model, "knowlm_template", None) or DEFAULT_TEMPLATE).name
        config = getattr(model, "config", None)
        self.max_context = int(getattr(config, "max_position_embeddings", None) or 2048)
        self.vocab_size = int(getattr(config, "vocab_size", None) or len(tokenizer))

    @property
    def device(self):
        return next(self.model.parameters()).device

    def generate(
        self,
        prompts: Sequence[str],
        params: DecodingParams | None = None,
        batch_size: int = 16,
        logits_processor: ProcessorFactory | None = None,
        progress: bool = False,
    ) -> list[Generation]:
        import torch

        params = (params or DecodingParams()).validate()
        if params.seed is not None:
            torch.manual_seed(params.seed)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
        results: list[Generation | None] = [None] * len(prompts)
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc="generating", unit="batch")
        for batch in batches:
            outputs = self._generate_batch([prompts[i] for i in batch], params, logits_processor(batch) if logits_processor else None)
            for index, generation in zip(batch, outputs):
                results[index] = generation
        return results  # type: ignore[return-value]

    def _generate_batch(self, prompts: list[str], params: DecodingParams, processors) -> list[Generation]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(self.device)
        eos = self.tokenizer.eos_token_id
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=params.sampling,
            temperature=params.temperature if params.sampling else None,
            top_p=params.top_p if params.sampling else None,
            top_k=params.top_k if params.sampling else None,
            num_beams=params.num_beams,
            repetition_penalty=params.repetition_penalty,
            eos_token_id=eos,
            pad_token_id=self.tokenizer.pad_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
            stop_strings=list(params.stop) or None,
        )
        kwargs = {"tokenizer": self.tokenizer} if params.stop else {}
        if processors:
            kwargs["logits_processor"] = LogitsProcessorList(processors)
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=config, **kwargs)
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        prompt_lengths = enc["attention_mask"].sum(dim=1).tolist()
        results = []
        for row, prompt_len in zip(new_tokens.tolist(), prompt_lengths):
            hit_eos = eos in row
            if hit_eos:
                row = row[: row.index(eos)]
            else:
                while row and row[-1] == self.tokenizer.pad_token_id:  # padding after a stop string
                    row.pop()
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            text, hit_stop = cut_at_stop(text, params.stop)
            finish = "stop" if hit_eos or hit_stop else "length"
            results.append(Generation(text=text, num_tokens=len(row), finish_reason=finish, prompt_tokens=int(prompt_len)))
        return results
