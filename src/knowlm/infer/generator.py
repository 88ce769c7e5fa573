"""The generator seam: what every text generator offers, and the one factory that builds one.

Extraction, the case runner, chat, instruction generation and the server's ``/extract`` program
against :class:`TextGenerator`, never against a concrete model: the batched Hugging Face
:class:`~knowlm.infer.engine.Generator` and the server's view of a running backend
(:class:`knowlm.serve.service.EngineGenerator`, HF or vLLM) both satisfy it, and tests use
scripted fakes. :func:`load_generator` is the one way to go from a model path (+ adapter) to a
generator: it resolves the prompt template once (:func:`knowlm.models.templates.resolve_template`)
before any weights load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from knowlm.decoding import DecodingParams
from knowlm.models.templates import Turn, get, render

# Called with the indices (into the caller's prompt list) of one batch; returns logits processors for it.
ProcessorFactory = Callable[[Sequence[int]], list]
# generate(progress=...): False, True (the generator's own bar, in prompts), or a callback given the indices of
# the prompts just answered and their Generations, so that the caller counts what its user thinks in (texts, tokens).
ProgressCallback = Callable[[Sequence[int], Sequence["Generation"]], None]


@dataclass
class Generation:
    """One answer: only the new text (no prompt echo, no EOS, cut at stop strings)."""

    text: str
    num_tokens: int  # generated tokens, EOS excluded
    finish_reason: str  # "stop" (EOS or stop string) or "length"
    prompt_tokens: int = 0
    logprobs: list | None = None  # (token id, logprob, [(id, logprob), ...]) per token, when asked for (serving)


@runtime_checkable
class TextGenerator(Protocol):
    """A model that turns prompts into answers, with the template it was tuned on."""

    template: str  # name in knowlm.models.templates.TEMPLATES
    # Optional: ``ie_wording`` ("full" | "compact"), the IE prompt wording the model was tuned on;
    # extraction uses it when the caller names none (generators without it get "full").
    tokenizer: Any  # a Hugging Face tokenizer: callable, decode(), eos/pad ids
    max_context: int  # prompt + answer tokens the model can attend to
    vocab_size: int  # logits width (constrained decoding masks this many tokens)

    @property
    def stop(self) -> tuple[str, ...]:
        """Text that ends an answer besides EOS: where the template would start a new turn."""
        ...

    def prompt(self, instruction: str, input: str = "", system: str | None = None, history: Sequence[Turn] = ()) -> str:
        """The text the model continues, in this generator's template."""
        ...

    def generate(
        self,
        prompts: Sequence[str],
        params: DecodingParams | None = None,
        batch_size: int = 16,
        logits_processor: ProcessorFactory | None = None,
        progress: bool | ProgressCallback = False,
    ) -> list[Generation]:
        """One :class:`Generation` per prompt, in the caller's order."""
        ...


class TemplatePrompts:
    """``prompt()`` and ``stop`` from ``self.template``: what every TextGenerator shares."""

    template: str

    @property
    def stop(self) -> tuple[str, ...]:
        return get(self.template).stop

    def prompt(self, instruction: str, input: str = "", system: str | None = None, history: Sequence[Turn] = ()) -> str:
        # a tokenizer's own chat template (template "chat_template") renders with the tokenizer
        return render(self.template, instruction, input, system, history, tokenizer=getattr(self, "tokenizer", None))


GENERATOR_BACKENDS = ("hf", "vllm")


def load_generator(
    model: str,
    adapter: str | None = None,
    template: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    quantization: str | None = None,
    allocate: Sequence[float] | None = None,
    trust_remote_code: bool = False,
    ie_wording: str | None = None,
    backend: str = "hf",
    compile: bool = False,
):
    """Load ``model`` (+ PEFT ``adapter``) into a generator: the batched Hugging Face ``Generator``
    (``backend="hf"``; ``compile``: static KV cache, and ``torch.compile`` with CUDA graphs on a GPU), or
    vLLM's offline engine (``backend="vllm"``, CUDA only).

    The template is resolved here, once: ``template`` (a ``--template`` flag) if given, else the
    adapter's ``knowlm.json``, else the model's, else the default (see ``resolve_template``). An
    unknown name or a corrupt manifest fails before the weights load. The IE prompt wording is
    resolved the same way (``ie_wording``, see ``resolve_ie_wording``).
    """
    from knowlm.errors import KnowlmError

    if backend not in GENERATOR_BACKENDS:
        raise KnowlmError(f"unknown backend {backend!r}; choose one of: {', '.join(GENERATOR_BACKENDS)}")
    if backend == "vllm":
        on_gpu = device == "auto" or device.startswith("cuda")
        unsupported = [flag for flag, used in ((f"--device {device}", not on_gpu), ("quantization", quantization),
                                               ("--allocate", allocate), ("--compile", compile)) if used]
        if unsupported:
            raise KnowlmError(f"--backend vllm does not take {', '.join(unsupported)} (vLLM runs on CUDA and compiles on its own)")
        from knowlm.infer.vllm_generator import VllmGenerator

        return VllmGenerator.from_pretrained(model, adapter, template, dtype=dtype)

    from knowlm.infer.engine import Generator
    from knowlm.models import load, resolve_template

    from knowlm.models.templates import resolve_ie_wording

    name = resolve_template(model, adapter, template)
    wording = resolve_ie_wording(model, adapter, ie_wording)
    lm, tokenizer = load(
        model, adapter=adapter, dtype=dtype, device=device, quantization=quantization, allocate=allocate,
        trust_remote_code=trust_remote_code, template=name,
    )
    return Generator(lm, tokenizer, template=name, ie_wording=wording, compile=compile)
