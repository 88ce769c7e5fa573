"""GGUF export read back independently: transformers' own GGUF loader (CI), llama.cpp (opt-in)."""

import pytest
import torch

from knowlm.errors import KnowlmError
from knowlm.weights import export_gguf

TEXTS = ["浙江大学位于杭州，是一所研究型大学。", "Knowledge graphs store (head, relation, tail) triples.", " two  spaces\nand 12345 ✓"]


@pytest.mark.parametrize("qtype,tolerance", [("f16", 2e-3), ("q8_0", 3e-2)])
def test_transformers_reads_gguf_back(tiny_model, tiny_model_dir, tmp_path, qtype, tolerance):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = tiny_model
    summary = export_gguf(tiny_model_dir, tmp_path / f"tiny-{qtype}.gguf", type=qtype)
    if qtype == "q8_0":
        assert summary.quantized == 14  # every matrix whose rows are a multiple of 32
    reread = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=summary.output.split("/")[-1], dtype=torch.float32)
    gguf_tok = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=summary.output.split("/")[-1])
    for text in TEXTS:  # the vocabulary in the file rebuilds the same tokenizer
        assert gguf_tok(text).input_ids == tokenizer(text).input_ids, text
    ids = torch.tensor([tokenizer(TEXTS[0]).input_ids])
    with torch.no_grad():
        want, got = model(ids).logits, reread(ids).logits
    scale = want.abs().max()
    assert (want - got).abs().max() <= tolerance * scale
    assert (want.argmax(-1) == got.argmax(-1)).float().mean() >= 0.9


def test_non_llama_is_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(KnowlmError, match="LLaMA-architecture"):
        export_gguf(tmp_path, tmp_path / "x.gguf")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".tmp-*"))


@pytest.mark.optin
def test_llama_cpp_runs_the_export_with_transformers_greedy_tokens(tiny_model, tiny_model_dir, tmp_path):
    """Needs llama-cpp-python (builds from source in ~5.5 min on 2 cores): KNOWLM_OPTIN=1."""
    llama_cpp = pytest.importorskip("llama_cpp")
    model, tokenizer = tiny_model
    path = tmp_path / "tiny-f32.gguf"
    export_gguf(tiny_model_dir, path, type="f32")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, verbose=False)
    for text in TEXTS:
        ids = tokenizer(text).input_ids
        assert llm.tokenize(text.encode("utf-8"), add_bos=True) == ids, text
        with torch.no_grad():
            hf = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, min_new_tokens=8)[0, len(ids):].tolist()
        cpp = []
        for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
            cpp.append(token)
            if len(cpp) == 8:
                break
        assert cpp == hf, text
