import pytest

from knowlm.errors import KnowlmError
from knowlm.models import templates


def test_alpaca_matches_knowlm_prompt():
    prompt = templates.render("alpaca", "抽取实体", "浙江大学位于杭州。")
    assert prompt.startswith("Below is an instruction that describes a task, paired with an input")
    assert prompt.endswith("### Instruction:\n抽取实体\n\n### Input:\n浙江大学位于杭州。\n\n### Response:\n")
    assert "### Input" not in templates.render("alpaca", "Hello")


def test_llama2_oneke_style_has_system_block_and_history():
    prompt = templates.render("llama2", "q2", history=[("q1", "a1")])
    assert prompt.startswith("[INST] <<SYS>>\nYou are a helpful assistant. 你是一个乐于助人的助手。\n<</SYS>>\n\nq1 [/INST] a1 </s><s>")
    assert prompt.endswith("[INST] q2 [/INST]")


def test_chatml_and_raw():
    assert templates.render("chatml", "hi", system="S") == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert templates.render("raw", "Once upon") == "Once upon"


def test_training_prompt_equals_inference_prompt():
    for name in templates.TEMPLATES:
        if templates.TEMPLATES[name].uses_tokenizer:  # chat_template: covered with a tokenizer in tests/train
            continue
        prompt, answer = templates.render_training_example(name, "instr", "inp", "out", history=[("a", "b")])
        assert prompt == templates.render(name, "instr", "inp", history=[("a", "b")])
        assert answer == "out"


def test_unknown_template_is_a_clear_error():
    with pytest.raises(KnowlmError, match="unknown prompt template 'vicuna'"):
        templates.render("vicuna", "x")
