import io
import json

import pytest

from knowlm.errors import KnowlmError
from knowlm.infer import DecodingParams, Generator, preset
from knowlm.infer.cases import read_cases, run_cases
from knowlm.infer.chat import ChatSession, run_chat


@pytest.fixture(scope="module")
def generator(tiny_model):
    model, tokenizer = tiny_model
    return Generator(model, tokenizer, template="alpaca")


def test_batched_generation_equals_one_by_one(generator):
    prompts = [generator.prompt("浙江大学位于哪里？"), generator.prompt("Who was Marie Curie?", "a scientist"), generator.prompt("hi")]
    params = DecodingParams(max_new_tokens=12)
    batched = generator.generate(prompts, params, batch_size=3)
    single = [generator.generate([p], params)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]
    for generation, prompt in zip(batched, prompts):
        assert generation.num_tokens <= 12 and generation.finish_reason in ("stop", "length")
        assert "### Response" not in generation.text and "</s>" not in generation.text
        assert generation.prompt_tokens == len(generator.tokenizer(prompt)["input_ids"])


def test_generation_stops_at_eos_and_returns_only_new_text(generator, monkeypatch):
    """Force EOS as the third token: the text must be the first two tokens, without prompt or </s>."""
    import torch
    from transformers import LogitsProcessor

    eos = generator.tokenizer.eos_token_id

    class ForceEos(LogitsProcessor):
        def __init__(self):
            self.step = 0

        def __call__(self, input_ids, scores):
            self.step += 1
            forced = torch.full_like(scores, -float("inf"))
            forced[:, eos if self.step == 3 else 400] = 0
            return forced

    out = generator.generate([generator.prompt("x")], DecodingParams(max_new_tokens=10), logits_processor=lambda idx: [ForceEos()])[0]
    assert out.num_tokens == 2 and out.finish_reason == "stop"
    assert out.text == generator.tokenizer.decode([400, 400], skip_special_tokens=True)


def test_stop_strings_cut_the_answer(generator):
    free = generator.generate([generator.prompt("hello")], DecodingParams(max_new_tokens=10))[0].text
    assert len(free) > 2
    stop = free[1:3]
    cut = generator.generate([generator.prompt("hello")], DecodingParams(max_new_tokens=10, stop=[stop]))[0]
    assert cut.text == free[: free.find(stop)] and cut.finish_reason == "stop"


def test_sampling_is_reproducible_with_seed(generator):
    params = preset("creative").updated(max_new_tokens=8, seed=7)
    a = generator.generate([generator.prompt("hi")], params)[0].text
    b = generator.generate([generator.prompt("hi")], params)[0].text
    assert a == b


def test_decoding_params_validation():
    with pytest.raises(KnowlmError, match="top_p"):
        DecodingParams(top_p=0).validate()
    with pytest.raises(KnowlmError, match="unknown decoding parameter"):
        DecodingParams().updated(tempreature=1)
    with pytest.raises(KnowlmError, match="bad value"):
        DecodingParams().updated(max_new_tokens="many")
    assert DecodingParams().updated(max_tokens=5, do_sample="false").max_new_tokens == 5
    with pytest.raises(KnowlmError, match="unknown decoding preset"):
        preset("wild")


def test_cases_carry_their_own_parameters(generator, tmp_path):
    path = tmp_path / "cases.jsonl"
    rows = [
        {"id": "a", "instruction": "介绍一下杭州", "parameters": {"max_new_tokens": 3}},
        {"id": "b", "instruction": "Tell me about Warsaw", "input": "briefly"},
        {"id": "c", "instruction": "介绍一下杭州", "parameters": {"max_new_tokens": 3}},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n")
    results = run_cases(generator, read_cases(path, DecodingParams(max_new_tokens=6)), progress=False)
    assert [r["id"] for r in results] == ["a", "b", "c"]
    assert results[0]["parameters"]["max_new_tokens"] == 3 and results[0]["num_tokens"] <= 3
    assert results[1]["parameters"]["max_new_tokens"] == 6
    assert results[0]["output"] == results[2]["output"]


@pytest.mark.parametrize(
    "line, message",
    [('{"instruction": ', "invalid JSON"), ('{"input": "x"}', "non-empty 'instruction'"), ('{"instruction": "x", "parameters": {"top_p": 2}}', "top_p")],
)
def test_malformed_cases_name_the_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "ok"}\n' + line + "\n")
    with pytest.raises(KnowlmError, match=rf"bad.jsonl:2: .*{message}"):
        read_cases(path, DecodingParams())


def test_interactive_session_driven_through_stdin(generator):
    stdin = io.StringIO("你好\n/set temperature 0.5\n/set top_p 0.8\n/show\n/set nonsense 1\n/reset\nhello again\n/quit\nnever read\n")
    stdout = io.StringIO()
    session = ChatSession(generator, DecodingParams(max_new_tokens=4))
    answered = run_chat(session, stdin, stdout)
    out = stdout.getvalue()
    assert answered == 2
    assert session.params.temperature == 0.5 and session.params.top_p == 0.8
    assert '"temperature": 0.5' in out and "unknown decoding parameter 'nonsense'" in out
    assert len(session.history) == 1 and session.history[0][0] == "hello again"


class _Recorder(io.StringIO):
    """stdout that keeps each write and calls ``on_write(text)`` first."""

    def __init__(self, on_write):
        super().__init__()
        self.writes: list[str] = []
        self.on_write = on_write

    def write(self, text):
        self.on_write(text)
        self.writes.append(text)
        return super().write(text)


def test_chat_streams_answers_and_ctrl_c_stops_the_answer_not_the_session(generator):
    import _thread
    import signal

    stdin = io.StringIO("hello\n/set max_new_tokens 600\n/set min_new_tokens 600\ntell me everything\n/set min_new_tokens 0\nhi\n/quit\n")
    session = ChatSession(generator, DecodingParams(max_new_tokens=10))
    pressed = []

    def ctrl_c_during_the_long_answer(text):
        answer_piece = text not in (">>> ", "\n") and "_tokens = " not in text  # not a prompt, not a /set reply
        if session.params.min_new_tokens == 600 and answer_piece:
            pressed.append(text)
            if len(pressed) == 2:  # Ctrl-C while the second piece streams
                _thread.interrupt_main()

    stdout = _Recorder(ctrl_c_during_the_long_answer)
    # Python's own Ctrl-C handler, even when the suite runs in a background job (which starts with SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        answered = run_chat(session, stdin, stdout)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert answered == 2 and stdout.writes.count("\n[stopped]\n") == 1
    long_answer = stdout.writes[stdout.writes.index(">>> ", stdout.writes.index("min_new_tokens = 600\n")) + 1 : stdout.writes.index("\n[stopped]\n")]
    assert 0 < len(long_answer) < 300  # cut short: 600 tokens would stream about 600 pieces
    assert [turn[0] for turn in session.history] == ["hello", "hi"]  # the interrupted turn is not kept
    first = stdout.writes[stdout.writes.index(">>> ") + 1 : stdout.writes.index("\n", 1)]
    assert len(first) > 2 and "".join(first) == session.history[0][1]  # streamed in pieces, equal to the answer
    assert session.history[0][1] == generator.generate([generator.prompt("hello")], DecodingParams(max_new_tokens=10))[0].text.strip()


def test_chat_set_seed_reproduces_and_case_files_record_it(generator, tmp_path):
    session = ChatSession(generator, DecodingParams(max_new_tokens=8, temperature=1.0))
    assert session.command("/set seed 42") == "seed = 42" and session.params.seed == 42
    first = session.reply("hi")
    session.command("/reset")
    assert session.reply("hi") == first
    session.command("/set seed 43")
    session.command("/reset")
    assert session.reply("hi") != first
    path = tmp_path / "cases.jsonl"
    path.write_text(json.dumps({"instruction": "hi", "parameters": {"seed": 7, "temperature": 1.0}}) + "\n")
    result, = run_cases(generator, read_cases(path, DecodingParams(max_new_tokens=4)), progress=False)
    assert result["parameters"]["seed"] == 7


def test_chat_in_a_terminal_has_line_editing_and_history(tmp_path):
    """In a pseudo-terminal: readline recalls earlier lines with the up arrow, and the history file
    keeps them for the next session."""
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    script = (
        "import sys\n"
        "from knowlm.infer.chat import ChatSession, run_chat\n"
        "from knowlm.infer.generator import Generation\n"
        "class Echo:\n"
        "    template, stop = 'alpaca', ()\n"
        "    def prompt(self, instruction, *args, **kwargs): return instruction\n"
        "    def generate(self, prompts, params=None, **kwargs): return [Generation('echo:' + p, 1, 'stop') for p in prompts]\n"
        "run_chat(ChatSession(Echo(), None), sys.stdin, sys.stdout)\n"
    )
    history = tmp_path / "history"
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=slave, stdout=slave, stderr=slave,
                            env={**os.environ, "KNOWLM_CHAT_HISTORY": str(history), "TERM": "xterm"})
    os.close(slave)
    seen = b""

    def read_until(marker: bytes, count: int = 1):
        nonlocal seen
        deadline = time.time() + 30
        while seen.count(marker) < count and time.time() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                seen += os.read(master, 4096)
        assert seen.count(marker) >= count, seen

    try:
        read_until(b">>> ")
        os.write(master, b"hello\r")
        read_until(b"echo:hello")
        read_until(b">>> ", 2)
        os.write(master, b"world\r")
        read_until(b">>> ", 3)
        os.write(master, b"\x1b[A\x1b[A\r")  # up arrow twice: the line before last
        read_until(b"echo:hello", 2)
        read_until(b">>> ", 4)
        os.write(master, b"\x04")  # Ctrl-D leaves
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert history.read_text().split() == ["hello", "world", "hello"]
