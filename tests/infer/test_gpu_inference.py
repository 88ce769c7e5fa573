"""Inference on CUDA (``-m gpu``; skipped without a GPU): the serving engine answers as the ``Generator``
does, the compiled (CUDA-graph) paths answer as the plain ones, constrained extraction always parses,
and vLLM extraction works when vLLM is installed.

The model is a random LLaMA shaped for GPU kernels (head dim 64, grouped KV heads).
"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.gpu

N_PROMPTS = 16


@pytest.fixture(scope="module")
def gpu_model_dir(tmp_path_factory):
    from knowlm.models.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("gpu") / "model", hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                     num_attention_heads=4, num_key_value_heads=2)


@pytest.fixture(scope="module")
def prompts():
    from knowlm.resources import iter_corpus

    docs = [d["text"] for d in iter_corpus()]
    return [f"{docs[i % len(docs)][: 40 + 7 * i]}" for i in range(N_PROMPTS)]


def load_cuda(model_dir, dtype: str):
    from knowlm.models import load

    return load(str(model_dir), dtype=dtype, device="cuda")


def test_engine_answers_equal_the_generator_on_cuda_bf16(gpu_model_dir, prompts):
    """Greedy bf16: the same batch decoded by the serving engine and by ``Generator`` gives the same
    answers. Rows are submitted in the Generator's order (longest first) and all answers run to full
    length, so both paths run the same shapes and bf16 rounding cannot tell them apart."""
    from knowlm.infer import DecodingParams, Generator
    from knowlm.infer.backends import GenerationRequest
    from knowlm.infer.batching import BatchingEngine, EngineConfig

    model, tokenizer = load_cuda(gpu_model_dir, "bfloat16")
    params = DecodingParams(max_new_tokens=32, min_new_tokens=32)
    want = Generator(model, tokenizer).generate(prompts, params, batch_size=N_PROMPTS)
    order = sorted(range(N_PROMPTS), key=lambda i: len(prompts[i]), reverse=True)
    engine = BatchingEngine(model, tokenizer, EngineConfig(max_batch_size=N_PROMPTS, admit_window_s=0.5)).start()
    try:
        handles = {i: engine.submit(GenerationRequest(prompts[i], params)) for i in order}
        got = {i: handle.result() for i, handle in handles.items()}
    finally:
        engine.stop(timeout=10)
    assert [(got[i].text, got[i].num_tokens) for i in range(N_PROMPTS)] == [(w.text, w.num_tokens) for w in want]
    assert engine.prefill_passes == 1


def test_compiled_engine_answers_equal_the_generator_on_cuda(gpu_model_dir, prompts):
    """--compile: static KV slots and a CUDA-graph decode step, requests arriving while others decode;
    greedy answers equal the Generator's (float32, so that different kernel shapes cannot flip a token)."""
    from knowlm.infer import DecodingParams, Generator
    from knowlm.infer.backends import GenerationRequest
    from knowlm.infer.batching import BatchingEngine, EngineConfig

    model, tokenizer = load_cuda(gpu_model_dir, "float32")
    reference = Generator(model, tokenizer)
    engine = BatchingEngine(model, tokenizer, EngineConfig(max_batch_size=8, compile=True, cache_len=256)).start()
    try:
        handles = []
        for i, prompt in enumerate(prompts):
            handles.append((prompt, 8 + 3 * i, engine.submit(GenerationRequest(prompt, DecodingParams(max_new_tokens=8 + 3 * i)))))
            time.sleep(0.01)
        for prompt, n, handle in handles:
            got, want = handle.result(), reference.generate([prompt], DecodingParams(max_new_tokens=n))[0]
            assert (got.text, got.num_tokens, got.finish_reason) == (want.text, want.num_tokens, want.finish_reason)
        assert engine._kv.compiled, "the compiled decode step failed and fell back to eager (see the log)"
    finally:
        engine.stop(timeout=10)


def test_generator_compile_answers_as_without_on_cuda(gpu_model_dir, prompts):
    from knowlm.infer import DecodingParams, Generator

    model, tokenizer = load_cuda(gpu_model_dir, "float32")
    params = DecodingParams(max_new_tokens=24)
    plain = Generator(model, tokenizer).generate(prompts, params, batch_size=8)
    compiled = Generator(model, tokenizer, compile=True)
    assert compiled.generate(prompts, params, batch_size=8) == plain
    assert hasattr(model, "_compiled_call")  # transformers compiled the static-cache decode step


def test_constrained_extraction_on_cuda(gpu_model_dir):
    pytest.importorskip("xgrammar")
    from knowlm.ie import extract_texts
    from knowlm.ie.constrained import Bounds
    from knowlm.infer import DecodingParams, Generator

    model, tokenizer = load_cuda(gpu_model_dir, "bfloat16")
    texts = ["马云在杭州创办了阿里巴巴。", "Marie Curie was born in Warsaw."] * 8
    for task, schema in (("ner", ["人物", "地点", "person"]), ("re", ["创办", "born in"]),
                         ("ee", [{"event_type": "组织关系-裁员", "arguments": ["裁员方", "裁员人数"]}])):
        records = extract_texts(Generator(model, tokenizer), texts, task, schema, constrained=True, params=DecodingParams(max_new_tokens=160),
                                bounds=Bounds(max_items=2, max_chars=4), batch_size=8)
        assert [r["parse_status"] for r in records] == ["ok"] * len(texts), task


def test_vllm_constrained_extraction(gpu_model_dir):
    """With vLLM installed: every constrained answer parses, for every prompt, through structured outputs."""
    pytest.importorskip("vllm")
    from knowlm.ie import extract_texts
    from knowlm.ie.constrained import Bounds
    from knowlm.infer import DecodingParams
    from knowlm.infer.vllm_generator import VllmGenerator

    generator = VllmGenerator.from_pretrained(str(gpu_model_dir), gpu_memory_utilization=0.3)
    texts = ["马云在杭州创办了阿里巴巴。", "Marie Curie was born in Warsaw."] * 8
    records = extract_texts(generator, texts, "re", ["创办", "born in", "位于"], constrained=True, params=DecodingParams(max_new_tokens=160),
                            bounds=Bounds(max_items=2, max_chars=4))
    assert [r["parse_status"] for r in records] == ["ok"] * len(texts)
    free = extract_texts(generator, texts[:2], "re", ["创办"], params=DecodingParams(max_new_tokens=16))
    assert [r["id"] for r in free] == ["0", "1"]
