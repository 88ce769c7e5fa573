"""diff -> recover: bit-exact in fp32, fp16 within tolerance; wrong base / damaged diff fail and leave nothing."""

import json

import pytest
import torch

from knowlm.errors import KnowlmError
from knowlm.models import read_manifest
from knowlm.weights import make_diff, recover
from tests.weights.weights_helpers import leftovers, perturbed_copy, state_of


@pytest.fixture(scope="module")
def exact_diff(tiny_model_dir, weights_target_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("wdiff") / "diff"
    summary = make_diff(tiny_model_dir, weights_target_dir, out)
    return out, summary


def test_recover_is_bit_exact_and_self_describing(tiny_model_dir, weights_target_dir, exact_diff, tmp_path):
    diff_dir, summary = exact_diff
    assert summary.exact and summary.fixups > 0  # the tiny injected values cannot round-trip without fixups
    manifest = read_manifest(diff_dir)["diff"]
    assert all(len(r["sha256"]) == 64 for r in manifest["tensors"].values())
    out = tmp_path / "recovered"
    result = recover(tiny_model_dir, diff_dir, out, max_shard_size="100KB")
    assert result.verified == result.tensors == len(state_of(weights_target_dir))
    want, got = state_of(weights_target_dir), state_of(out)
    assert set(want) == set(got)
    for name in want:
        assert got[name].dtype == want[name].dtype
        assert torch.equal(got[name].view(torch.int32), want[name].view(torch.int32)), name
    assert (out / "tokenizer.model").is_file() and (out / "config.json").is_file()
    assert "SHA-256" in read_manifest(out)["verification"]


def test_float16_diff_recovers_within_tolerance(tiny_model_dir, weights_target_dir, tmp_path):
    diff_dir = tmp_path / "diff16"
    summary = make_diff(tiny_model_dir, weights_target_dir, diff_dir, dtype="float16")
    assert not summary.exact and 0 < summary.max_abs_error < 1e-3
    assert json.loads((diff_dir / "config.json").read_text())["dtype"] == "float16"
    recover(tiny_model_dir, diff_dir, tmp_path / "rec16")
    want, got = state_of(weights_target_dir), state_of(tmp_path / "rec16")
    for name in want:
        assert got[name].dtype == torch.float32
        torch.testing.assert_close(got[name], want[name], atol=1e-3, rtol=1e-3)


def test_wrong_base_is_named_and_nothing_is_written(tiny_model_dir, exact_diff, tmp_path):
    wrong = perturbed_copy(tiny_model_dir, tmp_path / "other-base", scale=1e-2, seed=7, tiny_values=False)
    out = tmp_path / "out"
    with pytest.raises(KnowlmError, match=r"tensor lm_head\.weight .*not the model this diff was made from"):
        recover(wrong, exact_diff[0], out)
    assert not out.exists() and leftovers(tmp_path) == []


def test_corrupted_diff_shard_is_detected(tiny_model_dir, exact_diff, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(exact_diff[0], broken)
    shard = broken / "model.safetensors"
    data = bytearray(shard.read_bytes())
    header_len = int.from_bytes(data[:8], "little")
    begin = json.loads(data[8 : 8 + header_len])["model.embed_tokens.weight"]["data_offsets"][0]
    data[8 + header_len + begin + 4 * 1001 + 3] ^= 0x40  # flip an exponent bit of one diff value
    shard.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(KnowlmError, match="is corrupted"):
        recover(tiny_model_dir, broken, out)
    assert not out.exists() and leftovers(tmp_path) == []


def test_knowlm_original_bin_layout_with_naive_sum(tiny_model_dir, weights_target_dir, tmp_path):
    base, target = state_of(tiny_model_dir), state_of(weights_target_dir)
    legacy = tmp_path / "legacy-diff"
    legacy.mkdir()
    names = list(target)
    diff = {n: target[n] - base[n] for n in names}
    torch.save({n: diff[n] for n in names[:5]}, legacy / "pytorch_model-00001-of-00002.bin")
    torch.save({n: diff[n] for n in names[5:]}, legacy / "pytorch_model-00002-of-00002.bin")
    (legacy / "config.json").write_text((weights_target_dir / "config.json").read_text())
    expected = sum(float((base[n] + diff[n]).double().sum()) for n in names)
    result = recover(tiny_model_dir, legacy, tmp_path / "ok", expected_sum=round(expected, 4))
    assert result.mode == "legacy" and "passed" in result.verification
    with pytest.raises(KnowlmError, match="naive integrity check failed"):
        recover(tiny_model_dir, legacy, tmp_path / "bad", expected_sum=expected + 1.0)
    assert not (tmp_path / "bad").exists()
    unchecked = recover(tiny_model_dir, legacy, tmp_path / "unchecked")
    assert "UNVERIFIED" in unchecked.verification


def test_shape_and_name_mismatches_are_clear(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    other = perturbed_copy(tiny_model_dir, tmp_path / "resized", tiny_values=False)
    state = load_file(str(other / "model.safetensors"))
    state["lm_head.weight"] = torch.zeros(10, state["lm_head.weight"].shape[1])
    state["model.extra.weight"] = torch.zeros(3)
    save_file(state, str(other / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(KnowlmError, match=r"model\.extra\.weight of the target is not in the base"):
        make_diff(tiny_model_dir, other, tmp_path / "d1")
    del state["model.extra.weight"]
    save_file(state, str(other / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(KnowlmError, match=r"shape mismatch for lm_head\.weight"):
        make_diff(tiny_model_dir, other, tmp_path / "d2")
    assert leftovers(tmp_path) == []
