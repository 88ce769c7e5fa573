"""Streaming tensor I/O: sharded safetensors written chunk by chunk, read back by safetensors and transformers."""

import json

import pytest
import torch

from knowlm.errors import KnowlmError
from knowlm.utils import atomic_dir
from knowlm.weights.tensor_io import Checkpoint, ShardedWriter, copy_side_files
from tests.weights.weights_helpers import state_of


def test_sharded_roundtrip_loads_in_transformers(tiny_model_dir, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    src = state_of(tiny_model_dir)
    out = tmp_path / "resharded"
    with atomic_dir(out) as tmp:
        writer = ShardedWriter(tmp, max_shard_size="200KB")
        for name, t in src.items():  # write in uneven chunks to exercise streaming
            writer.begin(name, t.shape, t.dtype)
            flat = t.reshape(-1)
            for piece in flat.split(1000):
                writer.write(piece)
        files = writer.close()
        copy_side_files(tiny_model_dir, tmp)
    assert len(files) > 2
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(src)
    assert files[0].name == f"model-00001-of-{len(files):05d}.safetensors"
    for f in files:  # the official reader accepts our space-padded headers
        with safe_open(str(out / f.name), framework="pt") as handle:
            for key in handle.keys():
                assert torch.equal(handle.get_tensor(key), src[key])
    ids = torch.tensor([[1, 5, 9, 200]])
    a = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    b = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)


def test_reads_pytorch_bin_shards_and_slices(tiny_model_dir, tmp_path):
    src = state_of(tiny_model_dir)
    names = list(src)
    half = len(names) // 2
    torch.save({n: src[n] for n in names[:half]}, tmp_path / "pytorch_model-00001-of-00002.bin")
    torch.save({n: src[n] for n in names[half:]}, tmp_path / "pytorch_model-00002-of-00002.bin")
    with Checkpoint(tmp_path) as ckpt:
        assert set(ckpt.names()) == set(names)
        for n in names:
            assert torch.equal(ckpt.tensor(n), src[n])
        name = "model.embed_tokens.weight"
        assert torch.equal(ckpt.read(name, 64, 192), src[name].reshape(-1)[64:192])


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(KnowlmError, match="no weights"):
        Checkpoint(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{bad}")
    with pytest.raises(KnowlmError, match="not a readable safetensors"):
        Checkpoint(tmp_path)
