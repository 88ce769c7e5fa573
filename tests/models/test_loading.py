import json
import shutil

import pytest
import torch

from knowlm.errors import KnowlmError
from knowlm.models import load, read_manifest, resolve_template


def test_tiny_model_loads_through_public_loader(tiny_model_dir):
    model, tokenizer = load(str(tiny_model_dir))
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert (tiny_model_dir / "tokenizer.model").is_file()
    ids = tokenizer("浙江大学 Zhejiang University")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "浙江大学 Zhejiang University"
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "left"
    assert model.dtype == torch.float32 and not model.training
    manifest = read_manifest(tiny_model_dir)
    assert manifest["produced_by"] == "knowlm.models.tiny" and "model.safetensors" in manifest["checksums"]


def test_byte_fallback_covers_unseen_characters(tiny_model):
    _, tokenizer = tiny_model
    text = "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ☃ 龘"
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": "/no/such/model"}, "model directory not found"),
        ({"dtype": "float8"}, "unknown dtype"),
        ({"device": "cuda"}, "no CUDA GPU"),
        ({"quantization": "4bit", "device": "cpu"}, "needs a CUDA GPU"),
    ],
)
def test_bad_load_requests_are_clear_errors(tiny_model_dir, kwargs, message):
    args = {"model": str(tiny_model_dir), **kwargs}
    if torch.cuda.is_available() and kwargs.get("device") == "cuda":
        pytest.skip("has CUDA")
    with pytest.raises(KnowlmError, match=message):
        load(**args)


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(KnowlmError, match="no config.json"):
        load(str(tmp_path))


def test_adapter_is_applied_and_template_comes_from_manifest(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    peft_model = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(str(adapter_dir))
    (adapter_dir / "knowlm.json").write_text(json.dumps({"template": "llama2"}))

    plain, tokenizer = load(str(tiny_model_dir))
    adapted, _ = load(str(tiny_model_dir), adapter=str(adapter_dir))
    ids = tokenizer("杭州", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert not torch.allclose(plain(ids).logits, adapted(ids).logits)
    assert type(adapted).__name__ == "PeftModelForCausalLM"
    assert adapted.knowlm_template == "llama2" == resolve_template(str(tiny_model_dir), str(adapter_dir))
    assert resolve_template(str(tiny_model_dir)) == "alpaca"

    with pytest.raises(KnowlmError, match="not a PEFT adapter directory"):
        load(str(tiny_model_dir), adapter=str(tmp_path))


def test_bin_weights_load_with_weights_only(tiny_model_dir, tmp_path):
    """A legacy pytorch_model.bin checkpoint loads (transformers uses torch.load(weights_only=True))."""
    from safetensors.torch import load_file

    target = tmp_path / "legacy"
    shutil.copytree(tiny_model_dir, target)
    state = load_file(str(target / "model.safetensors"))
    (target / "model.safetensors").unlink()
    torch.save(state, target / "pytorch_model.bin")
    model, _ = load(str(target))
    assert torch.equal(model.state_dict()["lm_head.weight"], state["lm_head.weight"])


def test_hub_id_or_path_is_one_test():
    from knowlm.models.loading import is_hub_id

    assert all(is_hub_id(name) for name in ("gpt2", "zjunlp/OneKE", "meta-llama/Llama-2-7b-hf", "org/model.v1_2"))
    assert not any(is_hub_id(name) for name in ("./model", "/abs/model", "~/model", "a/b/c", "org/", "/", "model dir", ".hidden"))


@pytest.mark.parametrize("name", ["./missing-tok", "/no/such/tokenizer", "a/b/c"])
def test_tokenizer_paths_fail_fast_even_online(name, monkeypatch):
    from knowlm.models import load_tokenizer

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # a path is never retried against the hub
    with pytest.raises(KnowlmError, match=f"^tokenizer not found: {name}$"):
        load_tokenizer(name)


def test_tokenizer_only_directory_loads_prepared(tiny_model_dir, tmp_path):
    """data prepare takes a tokenizer directory without a model; it gets the same preparation."""
    from knowlm.models import load_tokenizer, prepare_tokenizer

    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json"):
        if (tiny_model_dir / name).is_file():
            shutil.copy2(tiny_model_dir / name, tok_dir / name)
    tokenizer = load_tokenizer(str(tok_dir), padding_side="right")
    assert tokenizer.pad_token == tokenizer.unk_token and tokenizer.padding_side == "right"
    assert prepare_tokenizer(tokenizer) is tokenizer and tokenizer.padding_side == "right"  # idempotent, side untouched
    with pytest.raises(KnowlmError, match="no config.json"):
        load(str(tok_dir))


def test_a_hub_like_name_under_a_local_directory_is_a_path(tmp_path, monkeypatch):
    """"demo-work/model" with demo-work on disk is a mistyped local path, not a hub repo."""
    from knowlm.models.loading import is_hub_id

    monkeypatch.chdir(tmp_path)
    assert is_hub_id("demo-work/model")
    (tmp_path / "demo-work").mkdir()
    assert not is_hub_id("demo-work/model") and is_hub_id("gpt2")
