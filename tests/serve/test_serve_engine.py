"""The continuous-batching engine: same answers as decoding alone, shared forward passes,
per-request decoding, streaming, stop strings, cancellation, adapters, limits."""

from __future__ import annotations

import threading
import time

import pytest

from knowlm.errors import KnowlmError
from knowlm.infer import DecodingParams, Generator
from knowlm.infer.backends import EngineStoppedError, GenerationRequest, QueueFullError

PROMPTS = ["浙江大学位于杭州", "Hello world, this is a longer prompt about knowledge graphs", "abc", "知识图谱", "The quick brown fox"]


def test_batched_answers_equal_decoding_alone_and_share_forward_passes(tiny_model, serve_engine):
    model, tokenizer = tiny_model
    reference = Generator(model, tokenizer)
    lengths = [20, 9, 16, 12, 20, 7, 18, 14]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(lengths))]
    before = serve_engine.decode_passes
    handles = []
    for prompt, n in zip(prompts, lengths):  # staggered arrivals: later requests join a running batch
        handles.append(serve_engine.submit(GenerationRequest(prompt, DecodingParams(max_new_tokens=n))))
        time.sleep(0.004)
    results = [h.result() for h in handles]
    passes = serve_engine.decode_passes - before
    for prompt, n, got in zip(prompts, lengths, results):
        want = reference.generate([prompt], DecodingParams(max_new_tokens=n))[0]
        assert (got.text, got.num_tokens, got.finish_reason) == (want.text, want.num_tokens, want.finish_reason)
    # One pass per step for the whole batch: far fewer passes than tokens generated.
    assert passes < sum(r.num_tokens for r in results) / 3
    assert max(size for _, size in list(serve_engine.batch_log)[-passes:]) >= 6
    assert serve_engine.max_rows_seen >= 6


def test_concurrent_threads_overlap_in_one_forward_pass(serve_engine):
    before = len(serve_engine.batch_log)
    barrier = threading.Barrier(8)
    results = [None] * 8

    def client(i):
        barrier.wait()
        results[i] = serve_engine.generate(PROMPTS[i % 5], DecodingParams(max_new_tokens=12))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sizes = [size for _, size in list(serve_engine.batch_log)[before:]]
    assert all(r is not None and r.num_tokens == 12 for r in results)
    assert max(sizes) == 8 and len(sizes) < 8 * 12 / 2


def test_streaming_sampling_seed_and_stop(serve_engine):
    params = DecodingParams(max_new_tokens=16, temperature=0.9, top_p=0.9, top_k=50, repetition_penalty=1.2, seed=7)
    handle = serve_engine.submit(GenerationRequest("Hello", params))
    events = list(handle)
    streamed = "".join(e.text for e in events)
    assert events[-1].finished and len(events) > 2
    again = serve_engine.generate("Hello", params)  # same seed, same text
    assert again.text == streamed and again.num_tokens == events[-1].num_tokens
    greedy = serve_engine.generate("Hello", DecodingParams(max_new_tokens=16))
    stop = greedy.text[3:6]
    cut = serve_engine.generate("Hello", DecodingParams(max_new_tokens=16, stop=[stop]))
    assert cut.finish_reason == "stop" and cut.text == greedy.text[: greedy.text.find(stop)]


def test_cancel_frees_the_slot(serve_engine):
    handle = serve_engine.submit(GenerationRequest("Hello", DecodingParams(max_new_tokens=900)))
    for event in handle:
        if event.num_tokens >= 3:
            handle.cancel()
    assert handle.final.finish_reason == "cancelled" and handle.final.num_tokens < 50
    deadline = time.time() + 5
    while serve_engine.busy() and time.time() < deadline:
        time.sleep(0.01)
    assert not serve_engine.busy()


def test_beam_requests_run_alone(tiny_model, serve_engine):
    model, tokenizer = tiny_model
    want = Generator(model, tokenizer).generate(["Hello"], DecodingParams(max_new_tokens=8, num_beams=3))[0]
    got = serve_engine.generate("Hello", DecodingParams(max_new_tokens=8, num_beams=3))
    assert got.text == want.text


def test_queue_limit_and_stopped_engine(tiny_model):
    from knowlm.infer.batching import BatchingEngine, EngineConfig

    model, tokenizer = tiny_model
    engine = BatchingEngine(model, tokenizer, EngineConfig(max_batch_size=1, max_waiting=1, num_threads=1))
    with pytest.raises(EngineStoppedError):  # not started
        engine.submit(GenerationRequest("x"))
    engine.start()
    first = engine.submit(GenerationRequest("a", DecodingParams(max_new_tokens=200)))
    time.sleep(0.05)  # admitted into the batch of one
    second = engine.submit(GenerationRequest("b", DecodingParams(max_new_tokens=2)))
    with pytest.raises(QueueFullError):
        engine.submit(GenerationRequest("c"))
    first.cancel()
    assert second.result().num_tokens == 2
    with pytest.raises(KnowlmError, match="adapter"):
        engine.submit(GenerationRequest("x", adapter="nope"))
    engine.stop(timeout=2)
    with pytest.raises(EngineStoppedError):
        engine.submit(GenerationRequest("x"))


def test_adapters_never_share_a_batch(tiny_model_dir, tmp_path):
    """Two LoRA adapters in one PEFT model: each request gets exactly its adapter's answer."""
    import torch
    from peft import LoraConfig, get_peft_model

    from knowlm.infer.batching import BatchingEngine, EngineConfig
    from knowlm.models import load

    paths = {}
    for seed, name in ((1, "ie"), (2, "chat")):
        base, _ = load(str(tiny_model_dir))
        torch.manual_seed(seed)
        lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        lora.save_pretrained(str(tmp_path / name))
        paths[name] = str(tmp_path / name)
    engine = BatchingEngine.from_pretrained(str(tiny_model_dir), adapters=paths, max_batch_size=8, num_threads=1).start()
    try:
        want = {}
        for name in (None, "ie", "chat"):
            want[name] = engine.generate("浙江大学位于", DecodingParams(max_new_tokens=10), adapter=name).text
        assert len(set(want.values())) == 3  # the adapters really change the model
        order = [None, "ie", "chat", "ie", None, "chat", "ie"]
        handles = [engine.submit(GenerationRequest("浙江大学位于", DecodingParams(max_new_tokens=10), adapter=a)) for a in order]
        assert [h.result().text for h in handles] == [want[a] for a in order]
    finally:
        engine.stop(timeout=5)


def test_vllm_backend_gives_a_clear_error_without_vllm_or_gpu(tiny_model_dir):
    from knowlm.infer.backends import make_backend

    with pytest.raises(KnowlmError, match="vllm|vLLM|GPU"):
        make_backend("vllm", str(tiny_model_dir))
    with pytest.raises(KnowlmError, match="unknown backend"):
        make_backend("tgi", str(tiny_model_dir))


def test_both_backends_give_the_server_a_text_generator(serve_engine, tiny_model, tiny_model_dir, tmp_path):
    """/extract and the web UI run extraction on whatever backend serves: each one, seen through the
    service, is a TextGenerator with the model's template, context and logits width."""
    import json
    import shutil

    from knowlm.infer import TextGenerator
    from knowlm.infer.vllm_backend import VllmEngine
    from knowlm.serve import Service

    model, tokenizer = tiny_model
    llama2_dir = tmp_path / "llama2"
    shutil.copytree(tiny_model_dir, llama2_dir)
    (llama2_dir / "knowlm.json").write_text(json.dumps({"template": "llama2"}))
    vllm_engine = VllmEngine(engine=None, tokenizer=tokenizer, max_context=96, vocab_size=model.config.vocab_size + 64)
    for engine, directory, template, context, vocab in (
        (serve_engine, tiny_model_dir, "alpaca", model.config.max_position_embeddings, model.config.vocab_size),
        (vllm_engine, llama2_dir, "llama2", 96, model.config.vocab_size + 64),  # vLLM pads the logits width
    ):
        service = Service.from_engine(engine, str(directory))
        generator = service.generator(service.resolve(None))
        assert isinstance(generator, TextGenerator) and generator.tokenizer is tokenizer
        assert (generator.template, generator.max_context, generator.vocab_size) == (template, context, vocab)
        assert generator.stop == {"alpaca": ("### Instruction:",), "llama2": ("[INST]",)}[template]
        assert generator.prompt("q") == service.prompt(service.resolve(None), "q")
