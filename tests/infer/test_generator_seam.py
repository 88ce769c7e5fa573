"""The generator seam: ``load_generator`` resolves the template once, before weights load, and
builds a ``TextGenerator`` that leaves the shared tokenizer's padding side alone."""

import json
import logging
import shutil

import pytest

from knowlm.errors import KnowlmError
from knowlm.infer import DecodingParams, Generator, TextGenerator, load_generator


@pytest.fixture
def llama2_model_dir(tiny_model_dir, tmp_path):
    """The tiny model, its manifest saying it was tuned with the llama2 template."""
    target = tmp_path / "llama2-model"
    shutil.copytree(tiny_model_dir, target)
    manifest = json.loads((target / "knowlm.json").read_text())
    (target / "knowlm.json").write_text(json.dumps({**manifest, "template": "llama2"}))
    return target


def test_factory_builds_a_text_generator_with_the_manifest_template(llama2_model_dir):
    gen = load_generator(str(llama2_model_dir), device="cpu")
    assert isinstance(gen, TextGenerator) and isinstance(gen, Generator)
    assert gen.template == "llama2" == gen.model.knowlm_template
    assert gen.stop == ("[INST]",)
    assert gen.prompt("q") == "[INST] <<SYS>>\nYou are a helpful assistant. 你是一个乐于助人的助手。\n<</SYS>>\n\nq [/INST]"
    assert (gen.max_context, gen.vocab_size) == (gen.model.config.max_position_embeddings, gen.model.config.vocab_size)


def test_flag_overrides_manifest_with_a_warning(llama2_model_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="knowlm"):
        gen = load_generator(str(llama2_model_dir), template="alpaca", device="cpu")
    assert gen.template == "alpaca" == gen.model.knowlm_template and gen.stop == ("### Instruction:",)
    assert [r.getMessage() for r in caplog.records] == [f"template 'alpaca' overrides 'llama2' recorded in {llama2_model_dir / 'knowlm.json'}"]


def test_bad_template_or_manifest_fails_before_weights_load(llama2_model_dir, monkeypatch):
    import knowlm.models

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(knowlm.models, "load", no_weights)
    with pytest.raises(KnowlmError, match="^unknown prompt template 'vicuna'; choose one of: alpaca, llama2, chatml, raw, chat_template$"):
        load_generator(str(llama2_model_dir), template="vicuna")
    (llama2_model_dir / "knowlm.json").write_text('{"template": "llama2",')
    with pytest.raises(KnowlmError, match=f"^{llama2_model_dir / 'knowlm.json'}: unreadable manifest"):
        load_generator(str(llama2_model_dir))


def test_generator_leaves_the_tokenizer_padding_side_alone(tiny_model_dir):
    """Training and editing share tokenizers padded on the right; generation pads left per call."""
    from knowlm.models import load

    model, tokenizer = load(str(tiny_model_dir), padding_side="right")
    gen = Generator(model, tokenizer)
    prompts = [gen.prompt("hi"), gen.prompt("Where is Zhejiang University, and when was it founded?")]
    params = DecodingParams(max_new_tokens=6)
    batched = gen.generate(prompts, params, batch_size=2)
    assert tokenizer.padding_side == "right"
    assert [g.text for g in batched] == [gen.generate([p], params)[0].text for p in prompts]  # left-padded correctly
