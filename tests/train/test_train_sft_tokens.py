"""SFT tokenisation against KnowLM's own ``generate_and_tokenize_prompt`` (one EOS, even after a
literal ``</s>``), every assistant turn learned, chat templates and chat ``messages`` records."""

from __future__ import annotations

import json

import pytest

from knowlm.errors import KnowlmError
from knowlm.models import templates
from knowlm.train.data_sft import check_record, tokenize_example


def knowlm_reference(tokenizer, prompt: str, output: str, cutoff: int) -> tuple[list[int], list[int]]:
    """zjunlp/KnowLM finetune/lora/finetune.py: tokenize(full) with truncation, EOS appended only when
    the ids do not already end with it and there is room; labels masked over len(tokenize(prompt))."""
    eos = tokenizer.eos_token_id

    def tokenize(text: str, add_eos: bool = True) -> list[int]:
        ids = tokenizer(text, truncation=True, max_length=cutoff, padding=False)["input_ids"]
        if ids[-1] != eos and len(ids) < cutoff and add_eos:
            ids = ids + [eos]
        return ids

    full = tokenize(prompt + output)
    user = len(tokenize(prompt, add_eos=False))
    return full, [-100] * user + full[user:]


def _records(sft_file: str) -> list[dict]:
    records = [json.loads(line) for line in open(sft_file, encoding="utf-8")][:16]
    records += [
        {"instruction": "Say the end token.", "input": "", "output": "done</s>"},  # literal EOS: KnowLM keeps one
        {"instruction": "两个结束符？", "input": "北京", "output": "好的 </s>"},
        {"instruction": "Echo", "input": "x", "output": "a </s> b"},  # EOS text in the middle stays where it is
        {"instruction": "Long answer", "input": "", "output": "word " * 400},  # truncated: no EOS, like KnowLM
    ]
    return records


def test_tokenisation_matches_knowlm_on_20_records_including_literal_eos(tiny_tokenizer, sft_file):
    eos = tiny_tokenizer.eos_token_id
    for record in _records(sft_file):
        prompt = templates.render("alpaca", record["instruction"], record["input"])
        want_ids, want_labels = knowlm_reference(tiny_tokenizer, prompt, record["output"], 512)
        ids, labels, truncated = tokenize_example(tiny_tokenizer, "alpaca", record, 512, train_on_inputs=False)
        assert ids.tolist() == want_ids, record["output"][:40]
        assert labels.tolist() == want_labels
        assert truncated == (len(want_ids) == 512 and want_ids[-1] != eos)
        if not truncated:
            assert ids.tolist().count(eos) == 1 + record["output"].removesuffix("</s>").count("</s>")
            assert ids[-1] == eos and ids[-2] != eos  # never a doubled EOS


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture
def chat_tokenizer(tiny_tokenizer):
    import copy

    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = CHATML
    return tokenizer


def _trained_text(tokenizer, ids, labels) -> list[str]:
    """The decoded runs of consecutive trained tokens."""
    runs, current = [], []
    for i, y in zip(ids.tolist(), labels.tolist()):
        if y != -100:
            current.append(i)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return runs + ([tokenizer.decode(current)] if current else [])


def test_tokenizer_chat_template_and_every_assistant_turn(chat_tokenizer):
    assert templates.resolve("auto", chat_tokenizer) == "chat_template"
    record = check_record({"messages": [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "Where is Hangzhou?"},
                                        {"role": "assistant", "content": "Zhejiang"},
                                        {"role": "user", "content": "And Wuhan?"},
                                        {"role": "assistant", "content": "Hubei"}]}, "t")
    assert record["history"] == [["Where is Hangzhou?", "Zhejiang"]] and record["output"] == "Hubei"
    ids, labels, _ = tokenize_example(chat_tokenizer, "chat_template", record, 512, train_on_inputs=False)
    prompt = templates.render("chat_template", record["instruction"], system="Be brief.", history=record["history"],
                              tokenizer=chat_tokenizer)
    assert prompt == chat_tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is Hangzhou?"},
         {"role": "assistant", "content": "Zhejiang"}, {"role": "user", "content": "And Wuhan?"}],
        tokenize=False, add_generation_prompt=True)
    n = len(chat_tokenizer(prompt)["input_ids"])
    assert ids[:n].tolist() == chat_tokenizer(prompt)["input_ids"]
    runs = [r.strip() for r in _trained_text(chat_tokenizer, ids, labels)]
    assert runs == ["Zhejiang<|im_end|>", "Hubei<|im_end|>"]  # both answers, each with its end of turn
    _, last_only, _ = tokenize_example(chat_tokenizer, "chat_template", record, 512, False, mask_history=True)
    assert [r.strip() for r in _trained_text(chat_tokenizer, ids, last_only)] == ["Hubei<|im_end|>"]


def test_chat_template_errors_and_auto_without_one(tiny_tokenizer):
    assert templates.resolve("auto", tiny_tokenizer) == "alpaca"
    with pytest.raises(KnowlmError, match="chat template"):
        templates.render("chat_template", "x", tokenizer=tiny_tokenizer)
    with pytest.raises(KnowlmError, match="alternate user/assistant"):
        check_record({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "f:1")


def test_inference_prompts_a_chat_template_model_the_way_it_was_tuned(chat_tokenizer, tiny_model):
    from knowlm.infer import Generator

    model, _ = tiny_model
    generator = Generator(model, chat_tokenizer, template="chat_template")
    prompt = generator.prompt("Where is Hangzhou?", history=[("hi", "hello")])
    ids, labels, _ = tokenize_example(chat_tokenizer, "chat_template", {"instruction": "Where is Hangzhou?", "input": "",
                                                                        "output": "Zhejiang", "history": [["hi", "hello"]]},
                                      512, False)
    n = len(chat_tokenizer(prompt)["input_ids"])
    assert ids[:n].tolist() == chat_tokenizer(prompt)["input_ids"]  # training's prompt is inference's
    assert prompt.endswith("<|im_start|>assistant\n") and "hello<|im_end|>" in prompt
