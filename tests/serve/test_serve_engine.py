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


def test_mixed_adapters_share_one_batch_and_answer_as_alone(adapter_engine):
    """Rows for two LoRA adapters and the base model decode in the same forward passes (PEFT mixed
    batches), each exactly as served alone; a seeded sampled row too."""
    engine = adapter_engine
    greedy = DecodingParams(max_new_tokens=10)
    sampled = DecodingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=11)
    want = {a: engine.generate("浙江大学位于", greedy, adapter=a).text for a in (None, "ie", "chat")}
    assert len(set(want.values())) == 3  # the adapters really change the model
    want_sampled = engine.generate("浙江大学位于", sampled, adapter="chat").text
    before = len(engine.batch_log)
    order = [None, "ie", "chat", "ie", None, "chat", "ie"]
    handles = [engine.submit(GenerationRequest("浙江大学位于", greedy, adapter=a)) for a in order]
    handles.append(engine.submit(GenerationRequest("浙江大学位于", sampled, adapter="chat")))
    assert [h.result().text for h in handles] == [want[a] for a in order] + [want_sampled]
    passes = list(engine.batch_log)[before:]
    assert max(rows for _, rows in passes) == len(handles)
    assert ("", "chat", "ie") in {adapters for adapters, _ in passes}  # base, chat and ie rows in one forward pass


def test_adapter_forward_uses_the_models_cache_keyword(adapter_engine):
    """A PEFT wrapper hides the base model's ``forward`` signature: the engine still passes the KV cache
    under the keyword the transformers model takes (``cache`` on current transformers), not the
    deprecated ``past_key_values`` (a FutureWarning on every forward pass)."""
    import inspect
    import warnings

    import torch
    from transformers import DynamicCache

    from knowlm.infer.kv_cache import cache_kwarg

    model = adapter_engine.model
    base = model.get_base_model()
    want = "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"
    assert cache_kwarg(model) == want == cache_kwarg(base)
    ids = torch.tensor([[1, 5, 9]])
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("error", FutureWarning)
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, **{cache_kwarg(model): DynamicCache()})
    assert out.logits.shape[:2] == (1, 3)


def test_a_failing_row_ends_only_its_request(tiny_model, serve_engine):
    """Bad numerics in one request and a logits processor that raises in another end those two
    requests (client-safe messages, no internals); the other rows of the batch finish as if alone."""
    from knowlm.infer.backends import BackendError
    from knowlm.infer.batching import FAILED
    from knowlm.infer.sampling import BAD_NUMERICS

    class Boom:
        calls = 0

        def __call__(self, input_ids, scores):
            Boom.calls += 1
            if Boom.calls == 3:
                raise RuntimeError("secret internal detail")
            return scores

    reference = Generator(*tiny_model)
    good = [(PROMPTS[i], DecodingParams(max_new_tokens=n)) for i, n in enumerate((14, 9, 16, 12))]
    failed_before = serve_engine.failed_requests
    bad = serve_engine.submit(GenerationRequest("x", DecodingParams(max_new_tokens=20, temperature=1.0, repetition_penalty=1e-300)))
    boom = serve_engine.submit(GenerationRequest("abc", DecodingParams(max_new_tokens=20), processors=[Boom()]))
    handles = [serve_engine.submit(GenerationRequest(p, params)) for p, params in good]
    for (prompt, params), handle in zip(good, handles):
        got, want = handle.result(), reference.generate([prompt], params)[0]
        assert (got.text, got.num_tokens, got.finish_reason) == (want.text, want.num_tokens, want.finish_reason)
    for handle, status, message in ((bad, 400, BAD_NUMERICS), (boom, 500, FAILED)):
        with pytest.raises(BackendError) as caught:
            handle.result()
        assert (caught.value.status, str(caught.value)) == (status, message)
    assert serve_engine.failed_requests == failed_before + 2


def test_seeded_sampling_reproduces_alone_or_batched_and_seeds_differ(tiny_model, serve_engine):
    seeds = (1, 2, 3, 7, 8, 1000)
    assert DecodingParams().updated(seed=7).seed == 7 and DecodingParams().updated(seed="42").seed == 42
    params = {s: DecodingParams(max_new_tokens=12, temperature=1.0, seed=s) for s in seeds}
    handles = [serve_engine.submit(GenerationRequest("Hello", params[s])) for s in seeds]
    batched = [h.result().text for h in handles]
    assert batched == [serve_engine.generate("Hello", params[s]).text for s in seeds]
    assert len(set(batched)) == len(seeds)
    # The batched HF Generator draws each prompt's tokens from the prompt's own seeded generator too.
    generator = Generator(*tiny_model)
    assert [g.text for g in generator.generate(["Hello", "abc", "Hello"], params[7])] == [batched[3], serve_engine.generate("abc", params[7]).text, batched[3]]


def test_penalties_bias_min_tokens_stop_ids_and_logprobs(tiny_model, serve_engine):
    """presence/frequency penalties, logit_bias, min_new_tokens and stop_token_ids decode in the engine
    exactly as in the batched Generator (one sampling module); logprobs report the chosen tokens."""
    reference = Generator(*tiny_model)
    eos = tiny_model[1].eos_token_id
    free = serve_engine.submit(GenerationRequest("Hello", DecodingParams(max_new_tokens=12), logprobs=3)).result()
    tokens = [entry[0] for entry in free.logprobs]
    assert len(tokens) == free.num_tokens == 12
    for token, logprob, top in free.logprobs:
        assert len(top) == 3 and top[0] == (token, logprob) and logprob <= 0 and top[0][1] >= top[1][1] >= top[2][1]
    stop_at = next(i for i, t in enumerate(tokens) if i >= 2 and t not in tokens[:i])
    cases = [
        DecodingParams(max_new_tokens=12, presence_penalty=1.5, frequency_penalty=1.0),
        DecodingParams(max_new_tokens=12, logit_bias={eos: 100.0}, min_new_tokens=4),
        DecodingParams(max_new_tokens=12, stop_token_ids=[tokens[stop_at]]),
        DecodingParams(max_new_tokens=12, temperature=0.8, top_k=20, repetition_penalty=1.3, presence_penalty=0.5, seed=3),
    ]
    got = [serve_engine.generate("Hello", p) for p in cases]
    want = [reference.generate(["Hello"], p)[0] for p in cases]
    assert [(g.text, g.num_tokens, g.finish_reason) for g in got] == [(w.text, w.num_tokens, w.finish_reason) for w in want]
    assert got[0].text != free.text
    assert (got[1].num_tokens, got[1].finish_reason) == (4, "stop")
    assert (got[2].num_tokens, got[2].finish_reason) == (stop_at + 1, "stop")


def test_beam_search_runs_beside_the_batch_and_stops_when_its_client_leaves(serve_engine):
    beam = serve_engine.submit(GenerationRequest("Hello", DecodingParams(max_new_tokens=900, min_new_tokens=900, num_beams=4)))
    deadline = time.time() + 5
    while not serve_engine.stats()["beam_running"] and time.time() < deadline:
        time.sleep(0.01)
    quick = serve_engine.generate("abc", DecodingParams(max_new_tokens=8))
    assert quick.num_tokens == 8 and not beam.done.is_set()  # answered while the search goes on
    beam.cancel()
    assert beam.done.wait(10) and beam.final.finish_reason == "cancelled"


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
