"""Batched generation with Hugging Face models.

Prompts are sorted by length and decoded in left-padded batches, so a batch of 16 costs little
more than one prompt; results come back in the caller's order with only the new text (no prompt
echo, no EOS, cut at stop strings). ``logits_processor`` lets callers constrain decoding per
prompt (the extraction layer uses it for schema-constrained JSON).
"""

from __future__ import annotations

from typing import Callable, Sequence

from knowlm.decoding import DecodingParams
from knowlm.errors import KnowlmError
from knowlm.infer.generator import Generation, ProcessorFactory, ProgressCallback, TemplatePrompts


STATIC_CACHE_STEP = 256  # static KV caches are sized in multiples of this (fewer recompilations)


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Text before the earliest stop string, and whether one was found."""
    cuts = [text.find(s) for s in stop if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def streamable_prefix(text: str, stops: Sequence[str]) -> int:
    """How much of ``text`` is safe to stream: not a half-decoded character, not a possible stop-string start."""
    end = len(text.rstrip("\ufffd"))
    keep = end
    for stop in stops:
        for k in range(min(len(stop) - 1, end), 0, -1):
            if text[:end].endswith(stop[:k]):
                keep = min(keep, end - k)
                break
    return keep


def eos_token_ids(model, tokenizer) -> list[int]:
    """EOS of the tokenizer and of the model's generation config (some models list several)."""
    ids = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (gen_eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return sorted(ids)


class _PromptBar:
    """``generate(progress=True)``: prompts answered and tokens generated, with an ETA (off when stderr is not a terminal)."""

    def __init__(self, total: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="generating", unit="prompt", disable=None)
        self.tokens = 0

    def __call__(self, indices, generations) -> None:
        self.tokens += sum(g.num_tokens for g in generations)
        self.bar.set_postfix(tokens=self.tokens, refresh=False)
        self.bar.update(len(indices))

    def close(self) -> None:
        self.bar.close()


class Generator(TemplatePrompts):
    """The Hugging Face :class:`~knowlm.infer.generator.TextGenerator`: shared by the CLI, case runner,
    extraction and evaluation. Build it with :func:`knowlm.infer.load_generator`, which resolves the
    template; handed a model directly, it uses the template :func:`knowlm.models.load` recorded.

    The tokenizer's padding side is never changed: batches are left-padded per call, so callers that
    share the tokenizer and pad it differently (training, editing) are not affected.

    ``compile``: decode with a static KV cache, which transformers' ``generate`` runs through
    ``torch.compile`` (CUDA graphs) on a GPU; the cache is sized in steps of :data:`STATIC_CACHE_STEP`
    tokens so that calls of similar length reuse one compiled graph. Answers are the same as without it.
    """

    def __init__(self, model, tokenizer, template: str | None = None, ie_wording: str = "full", compile: bool = False):
        from knowlm.models.loading import prepare_tokenizer
        from knowlm.models.templates import DEFAULT_TEMPLATE, get

        self.model = model
        self.tokenizer = prepare_tokenizer(tokenizer)
        self.template = get(template or getattr(model, "knowlm_template", None) or DEFAULT_TEMPLATE).name
        self.ie_wording = ie_wording
        config = getattr(model, "config", None)
        self.max_context = int(getattr(config, "max_position_embeddings", None) or 2048)
        self.vocab_size = int(getattr(config, "vocab_size", None) or len(tokenizer))
        self.compile = compile

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def eos_ids(self) -> list[int]:
        return eos_token_ids(self.model, self.tokenizer)

    def generate(
        self,
        prompts: Sequence[str],
        params: DecodingParams | None = None,
        batch_size: int = 16,
        logits_processor: ProcessorFactory | None = None,
        progress: bool | ProgressCallback = False,
    ) -> list[Generation]:
        import torch

        params = (params or DecodingParams()).validate()
        check_token_ids(params, self.vocab_size)
        if params.seed is not None:
            torch.manual_seed(params.seed % 2**64)  # beam sampling draws from torch's generator
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
        results: list[Generation | None] = [None] * len(prompts)
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        report = progress if callable(progress) else _PromptBar(len(prompts)) if progress else None
        try:
            for batch in batches:
                outputs = self._generate_batch([prompts[i] for i in batch], params, logits_processor(batch) if logits_processor else None)
                for index, generation in zip(batch, outputs):
                    results[index] = generation
                if report is not None:
                    report(batch, outputs)
        finally:
            if isinstance(report, _PromptBar):
                report.close()
        return results  # type: ignore[return-value]

    def stream(self, prompt: str, params: DecodingParams | None, on_text: Callable[[str], None]) -> Generation:
        """Generate one answer, passing each new piece of text to ``on_text`` as soon as it is final (no
        half characters, nothing that may turn out to be a stop string). A KeyboardInterrupt (Ctrl-C)
        raised meanwhile stops the generation and propagates to the caller."""
        params = (params or DecodingParams()).validate()
        check_token_ids(params, self.vocab_size)
        streamer = _TextStreamer(self.tokenizer, params.stop, on_text)
        result = self._generate_batch([prompt], params, None, streamer)[0]
        if len(result.text) > streamer.emitted:
            on_text(result.text[streamer.emitted :])
        return result

    def _generate_batch(self, prompts: list[str], params: DecodingParams, processors, streamer=None) -> list[Generation]:
        import torch
        from transformers import LogitsProcessorList

        from knowlm.infer.sampling import RowError, answer_tokens, generation_setup

        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(self.device)
        width = enc["input_ids"].shape[1]
        prompt_lengths = enc["attention_mask"].sum(dim=1).tolist()
        starts = [width - int(n) for n in prompt_lengths]
        eos_ids = self.eos_ids
        config, own = generation_setup(params, starts, width, eos_ids, self.tokenizer.pad_token_id, self.device)
        config.stop_strings = list(params.stop) or None
        if self.compile:
            config.cache_implementation = "static"
            needed = width + config.max_new_tokens
            config.max_cache_len = max(needed, min(self.max_context, -(-needed // STATIC_CACHE_STEP) * STATIC_CACHE_STEP))
        kwargs = {"tokenizer": self.tokenizer} if params.stop else {}
        if streamer is not None:
            kwargs["streamer"] = streamer
        if processors or own:  # the request's processors (grammar masks) first, then the token choice
            kwargs["logits_processor"] = LogitsProcessorList(list(processors or []) + own)
        try:
            with torch.inference_mode():
                out = self.model.generate(**enc, generation_config=config, **kwargs)
        except RowError as exc:
            raise KnowlmError(exc.message) from None
        results = []
        for row, prompt_len in zip(out[:, width:].tolist(), prompt_lengths):
            row, ended = answer_tokens(row, eos_ids, params)
            if not ended:
                while row and row[-1] == self.tokenizer.pad_token_id:  # padding after a stop string
                    row.pop()
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            text, hit_stop = cut_at_stop(text, params.stop)
            finish = "stop" if ended or hit_stop else "length"
            results.append(Generation(text=text, num_tokens=len(row), finish_reason=finish, prompt_tokens=int(prompt_len)))
        return results


def check_token_ids(params: DecodingParams, vocab_size: int) -> None:
    """Token ids in ``stop_token_ids`` and ``logit_bias`` must exist in the model's vocabulary."""
    bad = [t for t in [*params.stop_token_ids, *params.logit_bias] if t >= vocab_size]
    if bad:
        raise KnowlmError(f"token id {bad[0]} is outside the vocabulary (size {vocab_size})")


class _TextStreamer:
    """A transformers streamer (``put`` / ``end``) that hands finished text to a callback."""

    def __init__(self, tokenizer, stops: Sequence[str], on_text: Callable[[str], None]):
        from knowlm.infer.detokenize import IncrementalText

        self.stops = list(stops)
        self.on_text = on_text
        self.text = IncrementalText(tokenizer)
        self.ids: list[int] = []
        self.prompt_seen = False
        self.emitted = 0

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first puts the prompt
            self.prompt_seen = True
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
        text = self.text.update(self.ids)
        stable = self.text.stable
        cut, hit = cut_at_stop(text, self.stops)
        safe = streamable_prefix(cut if hit and len(cut) < len(stable) else stable, self.stops)
        if safe > self.emitted:
            self.on_text(text[self.emitted : safe])
            self.emitted = safe

    def end(self) -> None:
        pass
