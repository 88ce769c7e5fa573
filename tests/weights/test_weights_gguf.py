"""GGUF export read back independently by transformers' own GGUF loader (dequantisation, tokenizer, config).

llama.cpp itself (byte equality with its converter and quantizer, running the files) is in
test_weights_gguf_llama_cpp.py (opt-in).
"""

import json
import shutil
import sys

import numpy as np
import pytest
import torch

from knowlm.errors import KnowlmError
from knowlm.weights import export_gguf
from tests.weights.gguf_helpers import bpe_model

TEXTS = ["浙江大学位于杭州，是一所研究型大学。", "Knowledge graphs store (head, relation, tail) triples.", " two  spaces\nand 12345 ✓"]
# largest relative error of any dequantised matrix (|W' - W| / |W|), from the quantiser's step size
WEIGHT_ERROR = {"f16": 1e-3, "bf16": 4e-3, "q8_0": 1e-2, "q5_0": 6e-2, "q5_1": 6e-2, "q4_0": 0.12, "q4_1": 0.12}


def fields(path):
    import gguf

    reader = gguf.GGUFReader(str(path))
    return {f.name: f.contents() for f in reader.fields.values() if not f.name.startswith("GGUF.")}, reader


def load_gguf(path, **kwargs):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32, **kwargs).eval()


@pytest.mark.parametrize("qtype", list(WEIGHT_ERROR))
def test_transformers_dequantises_every_type_close_to_the_model(tiny_model, tiny_model_dir, tmp_path, qtype):
    model, tokenizer = tiny_model
    summary = export_gguf(tiny_model_dir, tmp_path / f"tiny-{qtype}.gguf", type=qtype)
    kv, reader = fields(tmp_path / f"tiny-{qtype}.gguf")
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == qtype.upper() and types["blk.0.attn_norm.weight"] == "F32"
    if qtype not in ("f16", "bf16"):  # rows of 176 do not split into 32-element blocks: F16, as llama.cpp falls back
        assert types["blk.0.ffn_down.weight"] == "F16" and summary.fallback_f16 == 2 and summary.quantized == 14
    assert kv["general.file_type"] == {"f16": 1, "bf16": 32, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q4_0": 2, "q4_1": 3}[qtype]
    assert kv["general.size_label"] == "485K" and kv["general.type"] == "model"
    reread = load_gguf(tmp_path / f"tiny-{qtype}.gguf")
    got = reread.state_dict()
    for name, want in model.state_dict().items():
        error = float((got[name] - want).norm() / want.norm())
        assert error <= (WEIGHT_ERROR[qtype] if want.dim() == 2 else 1e-7), (name, error)
    for text in TEXTS:
        ids = torch.tensor([tokenizer(text).input_ids])
        with torch.no_grad():
            want, have = model(ids).logits, reread(ids).logits
        assert float((have - want).norm() / want.norm()) <= 2 * WEIGHT_ERROR[qtype]


def test_model_saved_by_transformers_5_without_tokenizer_model(tiny_model, tiny_model_dir, tmp_path):
    """save_pretrained writes tokenizer.json only: the SentencePiece vocabulary (scores included) comes from it."""
    from transformers import AutoTokenizer

    modern = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, modern)
    (modern / "tokenizer.model").unlink()
    export_gguf(tiny_model_dir, tmp_path / "with-spm.gguf", type="f16", name="tiny")
    summary = export_gguf(modern, tmp_path / "json-only.gguf", type="f16", name="tiny")
    assert summary.tokenizer == "tokenizer.json (SentencePiece BPE)"
    assert (tmp_path / "json-only.gguf").read_bytes() == (tmp_path / "with-spm.gguf").read_bytes()  # scores, types: all equal
    gguf_tok = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="json-only.gguf")
    for text in TEXTS:
        assert gguf_tok(text).input_ids == tiny_model[1](text).input_ids, text


@pytest.fixture(scope="module")
def bpe_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("bpe")
    return {family: bpe_model(family, root / family) for family in ("llama3", "qwen2")}


@pytest.mark.parametrize("family,pre,arch", [("llama3", "llama-bpe", "llama"), ("qwen2", "qwen2", "qwen2")])
def test_byte_level_bpe_families(bpe_models, tmp_path, family, pre, arch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = bpe_models[family]
    assert not (model_dir / "tokenizer.model").exists()
    path = tmp_path / f"{family}.gguf"
    summary = export_gguf(model_dir, path, type="q8_0" if family == "qwen2" else "f16")
    kv, reader = fields(path)
    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text())
    assert kv["general.architecture"] == arch and kv["tokenizer.ggml.model"] == "gpt2" and kv["tokenizer.ggml.pre"] == pre
    assert summary.tokenizer == f"tokenizer.json (byte-level BPE, {pre})"
    assert kv["tokenizer.ggml.merges"][:3] == [" ".join(m) for m in tokenizer_json["model"]["merges"][:3]]
    assert kv["tokenizer.chat_template"] == (model_dir / "chat_template.jinja").read_text()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    assert kv["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id
    names = {t.name for t in reader.tensors}
    if family == "qwen2":  # q/k/v biases, no LM head (tied), vocabulary padded beyond the tokenizer
        assert "blk.0.attn_q.bias" in names and "output.weight" not in names
        assert len(kv["tokenizer.ggml.tokens"]) == len(tokenizer) + 8 and kv["tokenizer.ggml.tokens"][-1] == f"[PAD{len(tokenizer) + 7}]"
        assert "tokenizer.ggml.bos_token_id" not in kv
    else:
        assert kv["tokenizer.ggml.bos_token_id"] == tokenizer.bos_token_id and kv["tokenizer.ggml.add_bos_token"] is True
    gguf_tok = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    for text in TEXTS:
        assert gguf_tok(text).input_ids == tokenizer(text).input_ids, text
    messages = [{"role": "user", "content": "抽取实体：浙江大学位于杭州。"}]
    assert (gguf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            == tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    reference, reread = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval(), load_gguf(path)
    ids = torch.tensor([tokenizer(TEXTS[0]).input_ids])
    with torch.no_grad():
        want, have = reference(ids).logits, reread(ids).logits
    assert float((have - want).norm() / want.norm()) <= (2e-2 if family == "qwen2" else 2e-3)


@pytest.mark.parametrize("rope,keys", [
    ({"rope_type": "linear", "factor": 4.0}, {"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 4.0}),
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "beta_fast": 32.0, "beta_slow": 1.0},
     {"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0, "llama.rope.scaling.original_context_length": 64,
      "llama.rope.scaling.yarn_beta_fast": 32.0, "llama.rope.scaling.yarn_beta_slow": 1.0}),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}, {}),
], ids=["linear", "yarn", "llama3"])
def test_rope_scaling(tmp_path, rope, keys):
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    model_dir = bpe_model("llama3", tmp_path / "m", rope_scaling=rope)
    export_gguf(model_dir, tmp_path / "m.gguf", type="f32")
    kv, reader = fields(tmp_path / "m.gguf")
    assert kv["llama.rope.freq_base"] == 500000.0
    for key, value in keys.items():
        assert kv[key] == pytest.approx(value) if isinstance(value, float) else kv[key] == value, key
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    if rope["rope_type"] == "llama3":  # llama.cpp divides each frequency by rope_freqs: transformers' own llama3 rule
        config = AutoConfig.from_pretrained(str(model_dir))
        scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
        plain = 1.0 / (500000.0 ** (torch.arange(0, 16, 2, dtype=torch.float32) / 16))
        np.testing.assert_allclose(tensors["rope_freqs.weight"], (plain / scaled).numpy(), rtol=1e-5)
        assert "llama.rope.scaling.type" not in kv
    else:
        assert "rope_freqs.weight" not in tensors


def test_unsupported_inputs_are_one_clear_line(cli, tiny_model_dir, bpe_models, tmp_path, monkeypatch):
    def run(*argv):
        result = cli("weights", "export-gguf", *argv)
        err = result.stderr.strip()
        assert result.exit_code == 2 and err.startswith("error: ") and "\n" not in err
        return err

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as on a machine without llama-cpp-python
    err = run("-m", str(tiny_model_dir), "-o", str(tmp_path / "x.gguf"), "--type", "q4_k_m")
    assert "needs llama.cpp's quantizer: pip install llama-cpp-python" in err
    assert "unknown GGUF type 'q4_x'" in run("-m", str(tiny_model_dir), "-o", str(tmp_path / "x.gguf"), "--type", "q4_x")
    odd = tmp_path / "odd"
    shutil.copytree(bpe_models["llama3"], odd)
    tokenizer = json.loads((odd / "tokenizer.json").read_text())
    tokenizer["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\p{L}+|\s+"
    (odd / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert "unknown BPE pre-tokenizer" in run("-m", str(odd), "-o", str(tmp_path / "x.gguf"))
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text('{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}')
    assert "LLaMA-architecture" in run("-m", str(tmp_path / "gpt2"), "-o", str(tmp_path / "x.gguf"))
    config = json.loads((bpe_models["llama3"] / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 500000.0}
    dyn = tmp_path / "dyn"
    shutil.copytree(bpe_models["llama3"], dyn)
    (dyn / "config.json").write_text(json.dumps(config))
    assert "rope scaling 'dynamic'" in run("-m", str(dyn), "-o", str(tmp_path / "x.gguf"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".tmp-", "x.gguf"))]


def test_cli_export_summary(cli, tiny_model_dir, tmp_path):
    result = cli("weights", "export-gguf", "-m", tiny_model_dir, "-o", tmp_path / "t.gguf", "--type", "q5_1")
    out = result.stdout.replace("\n", " ")
    assert result.exit_code == 0
    assert "(14 matrices q5_1, 2 kept f16) as q5_1" in out and "vocabulary from tokenizer.model" in out


def test_imatrix_files_read_as_llama_quantize_reads_them(tmp_path):
    import struct

    import gguf

    from knowlm.weights.gguf_quantize import read_imatrix

    sums = np.arange(1, 9, dtype=np.float32).reshape(2, 4)  # two experts' sums of squared activations
    writer = gguf.GGUFWriter(str(tmp_path / "imatrix.gguf"), "imatrix")
    writer.add_string("imatrix.datasets", "corpus.txt")
    writer.add_tensor("blk.0.ffn_up.weight.in_sum2", sums)
    writer.add_tensor("blk.0.ffn_up.weight.counts", np.array([[4.0], [0.0]], dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    got = read_imatrix(tmp_path / "imatrix.gguf")["blk.0.ffn_up.weight"]
    np.testing.assert_array_equal(got, [0.25, 0.5, 0.75, 1.0, 1, 1, 1, 1])  # an expert never hit counts as 1
    values = np.array([2.0, 4.0, 6.0], dtype=np.float32)
    name = b"blk.1.attn_q.weight"
    (tmp_path / "imatrix.dat").write_bytes(struct.pack("<i", 1) + struct.pack("<i", len(name)) + name
                                           + struct.pack("<ii", 2, 3) + values.tobytes())
    np.testing.assert_array_equal(read_imatrix(tmp_path / "imatrix.dat")["blk.1.attn_q.weight"], [1.0, 2.0, 3.0])
    (tmp_path / "bad.dat").write_bytes(b"\x05\x00")
    with pytest.raises(KnowlmError, match="not an imatrix file"):
        read_imatrix(tmp_path / "bad.dat")
