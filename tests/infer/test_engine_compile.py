"""``--compile`` on CPU: the layouts the compiled GPU paths use give the same answers as the default ones.

On a CPU nothing is compiled (``torch.compile`` + CUDA graphs only run on CUDA), but the static-cache
slot layout of the batching engine (:mod:`knowlm.infer.kv_slots`) and the static cache of
``Generator(compile=True)`` run as they would there, so their bookkeeping is tested here.
"""

from __future__ import annotations

import pytest
import torch

from knowlm.errors import KnowlmError
from knowlm.infer import DecodingParams, Generator
from knowlm.infer.backends import GenerationRequest

PROMPTS = ["浙江大学位于杭州", "Hello world, this is a longer prompt about knowledge graphs", "abc", "知识图谱", "The quick brown fox"]


def test_slot_cache_matches_the_dynamic_cache_step_by_step(tiny_model):
    """Drive both layouts through the same admissions, departures and decode steps: a long prompt arriving
    when the write column is short of it (the rows move right), and the column reaching the end of the
    slots (the rows move left); the logits agree at every step."""
    from transformers import DynamicCache

    from knowlm.infer.kv_cache import DynamicBatch
    from knowlm.infer.kv_slots import SlotBatch

    model, tokenizer = tiny_model
    dynamic, slots = DynamicBatch(), SlotBatch(model, slots=4, length=40, pad_id=tokenizer.pad_token_id, compile=False)
    forward = lambda ids, mask, pos, cache: model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True).logits[:, -1].float()
    rows: list[list[int]] = []  # every row's tokens so far
    logits = None

    def admit(texts):
        nonlocal logits
        ids = [tokenizer(t)["input_ids"] for t in texts]
        width = max(map(len, ids))
        input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(i)) + i for i in ids])
        mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
        running = [len(r) for r in rows]
        with torch.inference_mode():
            cache = DynamicCache()
            new = forward(input_ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), cache)
            dynamic.admit(cache, mask, [len(i) for i in ids], running)
            slots.admit(cache, mask, [len(i) for i in ids], running)
        rows.extend(ids)
        logits = new if logits is None else torch.cat([logits, new])

    def step():
        nonlocal logits
        tokens = logits.argmax(-1).tolist()
        lengths = [len(r) for r in rows]
        with torch.inference_mode():
            want = dynamic.decode(tokens, lengths, forward)
            got = slots.decode(tokens, lengths)
        torch.testing.assert_close(got, want)
        for row, token in zip(rows, tokens):
            row.append(token)
        logits = want

    def keep(index):
        nonlocal logits, rows
        rows = [rows[i] for i in index]
        logits = logits[torch.tensor(index)]
        dynamic.keep(index, [len(r) for r in rows])
        slots.keep(index, [len(r) for r in rows])

    admit(["abc", "知识图谱"])
    for _ in range(3):
        step()
    keep([1])
    admit([PROMPTS[1]])  # longer than the write column: the running row moves right
    assert slots.moves == 1
    for _ in range(8):
        step()
    admit(["The quick brown fox", "杭州"])
    keep([2, 3])  # the long rows leave
    while slots.col < 40:
        step()
    step()  # the column reached the end of the slots: the rows moved left
    assert slots.moves == 2 and slots.col == max(map(len, rows))
    for _ in range(3):
        step()


def test_compiled_engine_answers_equal_decoding_alone(tiny_model):
    """The engine with --compile (slots of a static cache; no compiling on CPU), more requests than slots and
    slots short enough that rows move: every greedy answer equals the Generator's; seeded sampling
    reproduces; stop strings cut."""
    from knowlm.infer.batching import BatchingEngine, EngineConfig

    model, tokenizer = tiny_model
    reference = Generator(model, tokenizer)
    engine = BatchingEngine(model, tokenizer, EngineConfig(max_batch_size=4, compile=True, cache_len=64, num_threads=1)).start()
    try:
        lengths = [20, 9, 16, 12, 20, 7, 18, 14, 25, 3, 22, 17]
        # 12 requests for 4 slots: each waiting one takes a slot as soon as a row finishes, beside the others; the
        # batch stays busy for more steps than the 64 columns, so the rows have to move left at least once.
        handles = [(PROMPTS[i % 5], n, engine.submit(GenerationRequest(PROMPTS[i % 5], DecodingParams(max_new_tokens=n))))
                   for i, n in enumerate(lengths)]
        for prompt, n, handle in handles:
            got, want = handle.result(), reference.generate([prompt], DecodingParams(max_new_tokens=n))[0]
            assert (got.text, got.num_tokens, got.finish_reason) == (want.text, want.num_tokens, want.finish_reason)
        assert engine._kv.moves >= 1 and engine.max_rows_seen == 4
        sampled = DecodingParams(max_new_tokens=16, temperature=0.9, top_p=0.9, repetition_penalty=1.2, seed=7)
        first, again = engine.generate("Hello", sampled), engine.generate("Hello", sampled)
        assert first.text == again.text and first.num_tokens == 16
        greedy = engine.generate("Hello", DecodingParams(max_new_tokens=16))
        stop = greedy.text[3:6]
        cut = engine.generate("Hello", DecodingParams(max_new_tokens=16, stop=[stop]))
        assert cut.finish_reason == "stop" and cut.text == greedy.text[: greedy.text.find(stop)]
        long_prompt = " ".join(["knowledge"] * 70)  # over the 64 columns a row has
        with pytest.raises(KnowlmError, match="the model's context is 64$"):
            engine.submit(GenerationRequest(long_prompt))
    finally:
        engine.stop(timeout=5)


def test_compile_refuses_lora_adapters(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from knowlm.infer.batching import BatchingEngine, EngineConfig
    from knowlm.models import load

    base, tokenizer = load(str(tiny_model_dir))
    lora = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(KnowlmError, match="^--compile cannot serve LoRA adapters"):
        BatchingEngine(lora, tokenizer, EngineConfig(compile=True))


def test_generator_with_a_static_cache_answers_as_without(tiny_model):
    model, tokenizer = tiny_model
    plain, static = Generator(model, tokenizer), Generator(model, tokenizer, compile=True)
    prompts = PROMPTS[:3]
    for params in (DecodingParams(max_new_tokens=20), DecodingParams(max_new_tokens=20, temperature=0.9, seed=3, repetition_penalty=1.2),
                   DecodingParams(max_new_tokens=12, num_beams=3), DecodingParams(max_new_tokens=20, stop=["a"])):
        assert static.generate(prompts, params, batch_size=2) == plain.generate(prompts, params, batch_size=2)
    assert model._previous_max_cache_length == 256  # sized in steps of STATIC_CACHE_STEP: one shape for these calls


def test_serve_compile_flag_builds_a_slot_engine(cli, tiny_model_dir, monkeypatch):
    from knowlm.infer.backends import EngineOptions, make_backend
    from knowlm.infer.kv_slots import SlotBatch
    import knowlm.serve
    from knowlm.serve import server

    built = []

    def build_engine(config):
        built.append(config)
        return make_backend(config.backend, config.model, config.adapters, config.engine_options())

    monkeypatch.setattr(server, "build_engine", build_engine)
    monkeypatch.setattr(knowlm.serve, "run_server", lambda config, engine=None: built.append(engine))
    result = cli("serve", "-m", tiny_model_dir, "--compile", "--max-batch-size", "3", "--cache-len", "100", "--threads", "1")
    assert result.exit_code == 0, result.stderr
    config, engine = built
    assert config.compile and isinstance(engine._kv, SlotBatch) and (engine._kv.slots, engine._kv.length, engine.max_context) == (3, 100, 100)
    result = cli("serve", "-m", tiny_model_dir, "--cache-len", "100")
    assert (result.exit_code, result.stderr) == (2, "error: --cache-len takes --compile and at least 2 tokens\n")
    assert not engine._kv.compiled  # nothing is compiled on a CPU; the slot layout is the same
    with pytest.raises(KnowlmError, match=r"^--compile is for --backend hf \(vLLM compiles its decode step on its own\)$"):
        make_backend("vllm", str(tiny_model_dir), options=EngineOptions(compile=True))
