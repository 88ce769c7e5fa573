"""vLLM as a :class:`~knowlm.infer.generator.TextGenerator` (``knowlm extract --backend vllm``).

Offline batch inference: every prompt of a run goes to ``vllm.LLM.generate`` in one call and vLLM
schedules them itself (continuous batching, paged attention, CUDA graphs), so ``batch_size`` does not
apply. Prompts, templates and parsing stay knowlm's; only the decoding moves to vLLM.

Constrained extraction uses the same schema builder as the Hugging Face path: the factory that
``knowlm.ie.constrained.processor_factory`` returns carries each prompt's JSON Schema
(``json_schemas``), which goes to vLLM's structured outputs, and the engine is started with
xgrammar without free whitespace, the grammar ``--constrained`` compiles (same separators).
vLLM is CUDA-only; without it or a GPU the error is one line.
"""

from __future__ import annotations

from typing import Any, Sequence

from knowlm.decoding import DecodingParams
from knowlm.errors import KnowlmError
from knowlm.infer.engine import check_token_ids, eos_token_ids
from knowlm.infer.generator import Generation, ProcessorFactory, ProgressCallback, TemplatePrompts
from knowlm.infer.vllm_backend import _require_vllm, compact_json_engine_args, model_limits, sampling_params, start_error


class VllmGenerator(TemplatePrompts):
    """Decode with a ``vllm.LLM``; ``lora`` is the ``LoRARequest`` of the adapter, if any."""

    def __init__(self, llm, tokenizer, template: str, max_context: int, vocab_size: int | None = None, lora=None,
                 eos_ids: Sequence[int] | None = None):
        self.llm = llm
        self.tokenizer = tokenizer
        self.template = template
        self.max_context = max_context
        self.vocab_size = int(vocab_size or len(tokenizer))
        self.lora = lora
        self.eos_ids = set(eos_ids if eos_ids is not None else [tokenizer.eos_token_id])

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        adapter: str | None = None,
        template: str | None = None,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.9,
        tensor_parallel_size: int = 1,
        max_lora_rank: int = 64,
        seed: int = 0,
    ) -> "VllmGenerator":
        """Start vLLM on ``model`` (+ one LoRA ``adapter``); the template resolves as for ``load_generator``."""
        _require_vllm()
        from vllm import LLM

        from knowlm.infer.adapters import check_adapter_dir
        from knowlm.models import load_tokenizer, resolve_model_path, resolve_template

        name = resolve_template(model, adapter, template)
        if adapter is not None:
            check_adapter_dir("adapter", adapter)
        path = resolve_model_path(model)
        options: dict[str, Any] = dict(
            model=path, tokenizer=path, dtype=dtype, seed=seed, gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size, **compact_json_engine_args(),
        )
        if adapter is not None:
            options.update(enable_lora=True, max_loras=1, max_lora_rank=max_lora_rank)
        try:
            llm = LLM(**options)
        except Exception as exc:  # noqa: BLE001 - see start_error
            raise start_error(exc) from None
        lora = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest("adapter", 1, adapter)
        context, vocab_size = model_limits(path)
        tokenizer = load_tokenizer(path)
        return cls(llm, tokenizer, name, context, vocab_size, lora, eos_ids=_eos_ids(path, tokenizer))

    def generate(
        self,
        prompts: Sequence[str],
        params: DecodingParams | None = None,
        batch_size: int = 16,
        logits_processor: ProcessorFactory | None = None,
        progress: bool | ProgressCallback = False,
    ) -> list[Generation]:
        """One :class:`Generation` per prompt, in order. ``logits_processor`` must be a schema factory
        (``knowlm.ie.constrained.processor_factory``): vLLM takes the schema, not Python processors.
        vLLM decodes every prompt in one call, so a progress callback hears of them all at the end
        (vLLM's own bar shows the progress meanwhile)."""
        params = (params or DecodingParams()).validate()
        check_token_ids(params, self.vocab_size)
        if not prompts:
            return []
        schemas = None
        if logits_processor is not None:
            schemas = getattr(logits_processor, "json_schemas", None)
            if schemas is None or len(schemas) != len(prompts):
                raise KnowlmError("the vllm backend constrains output by JSON schema only (knowlm.ie.constrained.processor_factory)")
        if schemas is None:
            sampling: Any = sampling_params(params)
        else:
            sampling = [sampling_params(params, json_schema=schema) for schema in schemas]
        outputs = self.llm.generate(list(prompts), sampling, use_tqdm=bool(progress), lora_request=self.lora)
        generations = [self._generation(output, params) for output in outputs]
        if callable(progress):
            progress(range(len(generations)), generations)
        return generations

    def _generation(self, output, params: DecodingParams) -> Generation:
        completion = output.outputs[0]
        ids = list(completion.token_ids)
        # vLLM keeps the EOS that ended the answer in token_ids; knowlm counts answer tokens without it.
        if ids and completion.finish_reason == "stop" and ids[-1] in self.eos_ids and ids[-1] not in params.stop_token_ids:
            ids.pop()
        reason = "length" if completion.finish_reason == "length" else "stop"
        return Generation(text=completion.text, num_tokens=len(ids), finish_reason=reason, prompt_tokens=len(output.prompt_token_ids or ()))


def _eos_ids(path: str, tokenizer) -> list[int]:
    """EOS ids as the Hugging Face path sees them: the tokenizer's and ``generation_config.json``'s."""
    from types import SimpleNamespace

    from transformers import GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(path)
    except OSError:  # no generation_config.json
        config = None
    return eos_token_ids(SimpleNamespace(generation_config=config), tokenizer)
