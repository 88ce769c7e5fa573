"""GGUF export against llama.cpp itself (opt-in: KNOWLM_OPTIN=1).

Needs llama-cpp-python (``pip install llama-cpp-python``: builds llama.cpp, ~6 min on 2 cores) and
a llama.cpp source tree in ``KNOWLM_LLAMA_CPP_DIR`` (its ``convert_hf_to_gguf.py``,
``convert_lora_to_gguf.py``, ``gguf-py`` and ``models/ggml-vocab-*.gguf``; the llama-cpp-python
sdist carries one under ``vendor/llama.cpp``). Checked:

- byte equality with ``convert_hf_to_gguf.py`` for f32/f16/bf16/q8_0, also with the real LLaMA-3
  and Qwen2 vocabularies (rebuilt from llama.cpp's own vocab files, so its pre-tokenizer hash
  recognises them);
- q4_0/q4_1/q5_0/q5_1 tensor for tensor equal to ``llama_model_quantize --pure`` of llama.cpp's f32 file;
- K-quant/IQ types byte-equal to the documented workflow (converter ``--outtype auto`` + quantize);
- LoRA adapters byte-equal to ``convert_lora_to_gguf.py``, and base + ``--lora`` = the merged model;
- llama.cpp runs the files: same tokens as transformers' tokenizers, same greedy continuation.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from knowlm.weights import export_gguf, merge_lora
from knowlm.weights.gguf_lora import export_lora_gguf
from knowlm.weights.gguf_quantize import run_quantizer
from knowlm.weights.gguf_vocab import LLAMA3_SPLIT, QWEN2_SPLIT

pytestmark = pytest.mark.optin
TEXTS = ["浙江大学位于杭州，是一所研究型大学。", "Knowledge graphs store (head, relation, tail) triples.", " two  spaces\nand 12345 ✓"]


@pytest.fixture(scope="module")
def llama_cpp_dir():
    pytest.importorskip("llama_cpp")
    root = os.environ.get("KNOWLM_LLAMA_CPP_DIR")
    if not root or not (Path(root) / "convert_hf_to_gguf.py").is_file():
        pytest.skip("set KNOWLM_LLAMA_CPP_DIR to a llama.cpp source tree (e.g. llama-cpp-python's sdist vendor/llama.cpp)")
    return Path(root)


def convert(llama_cpp_dir, model_dir, out, outtype):
    subprocess.run([sys.executable, str(llama_cpp_dir / "convert_hf_to_gguf.py"), str(model_dir), "--outtype", outtype,
                    "--outfile", str(out)], check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return out


def tiny(root, **config):
    from knowlm.models.tiny import make_tiny

    return make_tiny(root, **config)


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16", "q8_0"])
def test_converter_byte_equality(llama_cpp_dir, tiny_model_dir, tmp_path, outtype):
    ref = convert(llama_cpp_dir, tiny_model_dir, tmp_path / "ref.gguf", outtype)
    export_gguf(tiny_model_dir, tmp_path / "ours.gguf", type=outtype)
    assert (tmp_path / "ours.gguf").read_bytes() == ref.read_bytes()


def real_vocab_model(llama_cpp_dir, name, out):
    """A tiny model carrying the real LLaMA-3 / Qwen2 tokenizer, rebuilt from llama.cpp's models/ggml-vocab-NAME.gguf."""
    import gguf
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    reader = gguf.GGUFReader(str(llama_cpp_dir / "models" / f"ggml-vocab-{name}.gguf"))
    kv = {f.name: f.contents() for f in reader.fields.values()}
    tokens, types, merges = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"], kv["tokenizer.ggml.merges"]
    llama3 = name == "llama-bpe"
    specials = [t for t, ty in zip(tokens, types) if ty == 3]
    vocab = {t: i for i, t in enumerate(tokens) if not re.fullmatch(r"\[PAD\d+\]", t)}  # padding is not the tokenizer's
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges], ignore_merges=llama3, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT if llama3 else QWEN2_SPLIT), "isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    bos, eos = kv.get("tokenizer.ggml.bos_token_id"), kv["tokenizer.ggml.eos_token_id"]
    if llama3:
        tok.post_processor = processors.TemplateProcessing(single=f"{tokens[bos]} $A", pair=f"{tokens[bos]} $A $B",
                                                           special_tokens=[(tokens[bos], bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=tokens[bos] if llama3 else None, eos_token=tokens[eos])
    common = dict(vocab_size=len(tokens), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, eos_token_id=eos, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = (LlamaForCausalLM(LlamaConfig(bos_token_id=bos, rope_parameters={"rope_type": "default", "rope_theta": 500000.0}, **common))
             if llama3 else Qwen2ForCausalLM(Qwen2Config(**common)))
    model.save_pretrained(str(out))
    fast.save_pretrained(str(out))
    inputs = (llama_cpp_dir / "models" / f"ggml-vocab-{name}.gguf.inp").read_text().split("\n__ggml_vocab_test__\n")
    outputs = (llama_cpp_dir / "models" / f"ggml-vocab-{name}.gguf.out").read_text().split("\n")
    for text, ids in list(zip(inputs, outputs))[:40]:  # the rebuilt tokenizer is the real one
        assert fast(text, add_special_tokens=False).input_ids == [int(i) for i in ids.split()], text
    return out


@pytest.mark.parametrize("name", ["llama-bpe", "qwen2"])
def test_real_bpe_vocabularies_byte_equal_and_tokenized_alike(llama_cpp_dir, tmp_path, name):
    import llama_cpp
    from transformers import AutoTokenizer

    model_dir = real_vocab_model(llama_cpp_dir, name, tmp_path / name)
    ref = convert(llama_cpp_dir, model_dir, tmp_path / "ref.gguf", "f16")  # its hash check names the pre-tokenizer
    export_gguf(model_dir, tmp_path / "ours.gguf", type="f16")
    assert (tmp_path / "ours.gguf").read_bytes() == ref.read_bytes()
    llm = llama_cpp.Llama(model_path=str(tmp_path / "ours.gguf"), vocab_only=True, verbose=False)
    hf = AutoTokenizer.from_pretrained(str(model_dir))
    for text in TEXTS:
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == hf(text, add_special_tokens=False).input_ids


@pytest.mark.parametrize("qtype", ["q4_0", "q4_1", "q5_0", "q5_1"])
def test_direct_quant_types_equal_llama_quantize(llama_cpp_dir, tmp_path, qtype):
    import gguf

    model_dir = tiny(tmp_path / "m", intermediate_size=256)  # rows must split into 32-blocks for llama-quantize
    ref_f32 = convert(llama_cpp_dir, model_dir, tmp_path / "ref-f32.gguf", "f32")
    quantize_pure(ref_f32, tmp_path / "ref.gguf", qtype)
    export_gguf(model_dir, tmp_path / "ours.gguf", type=qtype)
    ours, ref = gguf.GGUFReader(str(tmp_path / "ours.gguf")), gguf.GGUFReader(str(tmp_path / "ref.gguf"))
    ref_tensors = {t.name: t for t in ref.tensors}  # llama-quantize writes its own tensor order; compare by name
    assert {t.name: t.tensor_type for t in ours.tensors} == {n: t.tensor_type for n, t in ref_tensors.items()}
    for t in ours.tensors:
        assert np.asarray(t.data).tobytes() == np.asarray(ref_tensors[t.name].data).tobytes(), t.name
    assert ours.fields["general.file_type"].contents() == ref.fields["general.file_type"].contents()


def quantize_pure(src, dst, qtype):
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.pure = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype.upper()}"), True
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) == 0


@pytest.mark.parametrize("qtype", ["q4_k_m", "q6_k", "iq4_xs"])
def test_k_quants_equal_the_documented_workflow(llama_cpp_dir, tmp_path, qtype):
    model_dir = tiny(tmp_path / "m", hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=4)
    ref_auto = convert(llama_cpp_dir, model_dir, tmp_path / "ref-auto.gguf", "auto")
    run_quantizer(ref_auto, tmp_path / "ref.gguf", qtype)
    summary = export_gguf(model_dir, tmp_path / "ours.gguf", type=qtype)
    assert (tmp_path / "ours.gguf").read_bytes() == (tmp_path / "ref.gguf").read_bytes()
    assert summary.quantized > 0 and not list(tmp_path.glob(".tmp-*"))
    from transformers import AutoModelForCausalLM  # transformers dequantises K-quants and IQ types too

    reference = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    reread = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="ours.gguf", dtype=torch.float32).eval()
    ids = torch.tensor([[1, 450, 23, 900, 77, 5]])
    with torch.no_grad():
        want, have = reference(ids).logits, reread(ids).logits
    assert float((have - want).norm() / want.norm()) < 0.25  # 4-6 bit on random weights; bytes are checked above


def test_imatrix_is_used_and_required_where_llama_cpp_requires_it(tmp_path):
    import struct

    import gguf

    from knowlm.errors import KnowlmError

    model_dir = tiny(tmp_path / "m", hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=4)
    with pytest.raises(KnowlmError, match="needs an importance matrix"):
        export_gguf(model_dir, tmp_path / "x.gguf", type="iq2_xs")
    reader = gguf.GGUFReader(str(export_gguf(model_dir, tmp_path / "plain.gguf", type="q4_k_m").output))
    rng = np.random.default_rng(0)
    entries = {t.name: rng.uniform(0.01, 100.0, int(t.shape[0])).astype(np.float32) for t in reader.tensors if len(t.shape) == 2}
    blob = struct.pack("<i", len(entries))  # llama.cpp's legacy imatrix .dat layout
    for name, values in entries.items():
        blob += struct.pack("<i", len(name)) + name.encode() + struct.pack("<ii", 1, values.size) + values.tobytes()
    (tmp_path / "imatrix.dat").write_bytes(blob + struct.pack("<i", 1))
    guided = export_gguf(model_dir, tmp_path / "guided.gguf", type="q4_k_m", imatrix=tmp_path / "imatrix.dat")
    assert Path(guided.output).read_bytes() != (tmp_path / "plain.gguf").read_bytes()
    assert export_gguf(model_dir, tmp_path / "iq2.gguf", type="iq2_xs", imatrix=tmp_path / "imatrix.dat").mix.get("iq2_xs", 0) > 0


def test_lora_adapter_byte_equal_and_applied_like_the_merge(llama_cpp_dir, tiny_model_dir, tmp_path):
    import llama_cpp
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                                       "gate_proj", "up_proj", "down_proj"]))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    subprocess.run([sys.executable, str(llama_cpp_dir / "convert_lora_to_gguf.py"), str(tmp_path / "adapter"), "--base",
                    str(tiny_model_dir), "--outtype", "f32", "--outfile", str(tmp_path / "ref-lora.gguf")], check=True, capture_output=True)
    export_lora_gguf(tmp_path / "adapter", tmp_path / "lora.gguf", base=tiny_model_dir, type="f32")
    assert (tmp_path / "lora.gguf").read_bytes() == (tmp_path / "ref-lora.gguf").read_bytes()

    export_gguf(tiny_model_dir, tmp_path / "base.gguf", type="f32")
    merge_lora(tiny_model_dir, tmp_path / "adapter", tmp_path / "merged")
    export_gguf(tmp_path / "merged", tmp_path / "merged.gguf", type="f32")
    ids = [1, 450, 23, 900, 77, 5]
    with_lora = logits_of(llama_cpp.Llama(model_path=str(tmp_path / "base.gguf"), lora_path=str(tmp_path / "lora.gguf"),
                                          n_ctx=64, logits_all=True, verbose=False), ids)
    merged = logits_of(llama_cpp.Llama(model_path=str(tmp_path / "merged.gguf"), n_ctx=64, logits_all=True, verbose=False), ids)
    plain = logits_of(llama_cpp.Llama(model_path=str(tmp_path / "base.gguf"), n_ctx=64, logits_all=True, verbose=False), ids)
    np.testing.assert_allclose(with_lora, merged, atol=2e-3)  # runtime x@A@B vs merged weights: float rounding only
    assert np.abs(plain - merged).max() > 20 * np.abs(with_lora - merged).max()  # and the adapter did something


def logits_of(llm, ids):
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)])


@pytest.mark.parametrize("family", ["spm", "llama3", "qwen2"])
def test_llama_cpp_runs_the_exports_with_transformers_tokens(llama_cpp_dir, tiny_model_dir, tmp_path, family):
    import llama_cpp
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.weights.gguf_helpers import bpe_model

    model_dir = tiny_model_dir if family == "spm" else bpe_model(family, tmp_path / family)
    export_gguf(model_dir, tmp_path / "m.gguf", type="f32")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval(), AutoTokenizer.from_pretrained(str(model_dir))
    llm = llama_cpp.Llama(model_path=str(tmp_path / "m.gguf"), n_ctx=256, verbose=False)
    if family == "spm":  # the reference is SentencePiece itself (transformers 5 drops a leading space's extra piece)
        import sentencepiece

        sp = sentencepiece.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))
    for text in TEXTS:
        ids = [1] + sp.encode(text) if family == "spm" else tokenizer(text).input_ids
        assert llm.tokenize(text.encode("utf-8"), add_bos=family != "qwen2") == ids, text
        with torch.no_grad():
            hf = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, min_new_tokens=8)[0, len(ids):].tolist()
        cpp = []
        for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
            cpp.append(token)
            if len(cpp) == 8:
                break
        assert cpp == hf, text
