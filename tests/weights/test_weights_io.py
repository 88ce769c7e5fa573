"""Streaming tensor I/O: sharded safetensors written chunk by chunk, read back by safetensors and transformers."""

import json

import pytest
import torch

from knowlm.errors import KnowlmError
from knowlm.utils import atomic_dir
from knowlm.weights.checkpoint_reader import Checkpoint
from knowlm.weights.checkpoint_writer import ShardedWriter, copy_side_files
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


def _rewrite_header(path, edit):
    """Rewrite a safetensors header in place (same length, padded with spaces) after ``edit(header)``."""
    data = bytearray(path.read_bytes())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    edit(header)
    blob = json.dumps(header, separators=(",", ":")).encode()
    assert len(blob) <= n
    data[8 : 8 + n] = blob + b" " * (n - len(blob))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("command", ["export-gguf", "merge-lora", "export-mindspore", "recover"])
def test_shape_beyond_byte_range_is_refused_by_every_command(cli, tiny_model_dir, tmp_path, command):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)

    def grow(header):  # norm weight claims 65 elements over a 64-element byte range
        header["model.norm.weight"]["shape"] = [65]

    _rewrite_header(model / "model.safetensors", grow)
    argv = {"export-gguf": ["-m", str(model), "-o", str(tmp_path / "o.gguf")],
            "merge-lora": ["--base", str(model), "--adapter", str(tmp_path), "--output", str(tmp_path / "o")],
            "export-mindspore": ["-m", str(model), "-o", str(tmp_path / "o.ckpt")],
            "recover": ["--base", str(tiny_model_dir), "--diff", str(model), "--output", str(tmp_path / "o")]}[command]
    result = cli("weights", command, *argv)
    err = result.stderr.strip()
    assert result.exit_code == 2 and "\n" not in err
    assert f"{model / 'model.safetensors'}: tensor model.norm.weight declares shape [65]" in err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("o", ".tmp-"))]


def test_overlapping_ranges_and_trailing_bytes_are_refused(tiny_model_dir, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    path = model / "model.safetensors"
    original = path.read_bytes()

    def overlap(header):  # the second tensor's range moves 4 bytes into the first one
        second = sorted((e for k, e in header.items() if k != "__metadata__"), key=lambda e: e["data_offsets"][0])[1]
        second["data_offsets"] = [second["data_offsets"][0] - 4, second["data_offsets"][1] - 4]

    _rewrite_header(path, overlap)
    with pytest.raises(KnowlmError, match="overlapping or gapped byte ranges"):
        Checkpoint(model)
    path.write_bytes(original + b"\0" * 16)
    with pytest.raises(KnowlmError, match="16 bytes after its last tensor"):
        Checkpoint(model)
    path.write_bytes(original[:-10])
    with pytest.raises(KnowlmError, match="truncated"):
        Checkpoint(model)


def test_pickles_are_refused_without_suggesting_weights_only_false(tmp_path):
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"w": torch.ones(2), "x": Payload()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(KnowlmError) as info:
        Checkpoint(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'pytorch_model.bin'} is not a safetensors/weights-only file; convert it with a trusted tool")
    assert "weights_only" not in message and "posix.system" in message
