"""Checksum lists (md5sum / sha256sum) verified offline against a local tree; offline download fails clearly."""

import hashlib

import pytest

from knowlm.errors import KnowlmError
from knowlm.weights import download, parse_checksum_file, verify_checksums


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    files = {"pytorch_model-00001-of-00002.bin": b"shard one" * 1000, "pytorch_model-00002-of-00002.bin": b"shard two",
             "sub/tokenizer.model": b"\x00spm"}
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root, files


def _write_list(path, files, algorithm, star=False):
    lines = [f"{hashlib.new(algorithm, data).hexdigest()}  {'*' if star else ''}{name}" for name, data in files.items()]
    path.write_text("# published checksums\n" + "\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("algorithm,star", [("md5", False), ("sha256", True)])
def test_verify_accepts_md5sum_and_sha256sum_lists(tree, tmp_path, algorithm, star):
    root, files = tree
    listing = _write_list(tmp_path / f"{algorithm}.txt", files, algorithm, star)
    assert {a for a, _ in parse_checksum_file(listing).values()} == {algorithm}
    report = verify_checksums(root, listing)
    assert sorted(report.verified) == sorted(files)


def test_mismatch_and_missing_files_are_named(tree, tmp_path):
    root, files = tree
    listing = _write_list(tmp_path / "md5.txt", files, "md5")
    (root / "pytorch_model-00002-of-00002.bin").write_bytes(b"shard tw0")
    with pytest.raises(KnowlmError, match=r"pytorch_model-00002-of-00002\.bin: md5 mismatch"):
        verify_checksums(root, listing)
    (root / "sub" / "tokenizer.model").unlink()
    (root / "pytorch_model-00002-of-00002.bin").write_bytes(files["pytorch_model-00002-of-00002.bin"])
    with pytest.raises(KnowlmError, match=r"sub/tokenizer\.model: listed .* but not found"):
        verify_checksums(root, listing)
    (tmp_path / "garbage.txt").write_text("not a checksum line\n")
    with pytest.raises(KnowlmError, match="garbage.txt:1"):
        verify_checksums(root, tmp_path / "garbage.txt")


def test_cli_verify_and_offline_download(cli, tree, tmp_path, monkeypatch):
    root, files = tree
    listing = _write_list(tmp_path / "sha.txt", files, "sha256")
    result = cli("weights", "verify", root, "--checksums", listing)
    assert result.exit_code == 0 and "All 3 listed files" in result.stdout
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = cli("weights", "download", "zjunlp/OneKE", "--output", tmp_path / "dl", "--include", "*.json")
    err = result.stderr.strip()
    assert result.exit_code == 2 and err.startswith("error:") and "offline" in err and "\n" not in err
    with pytest.raises(KnowlmError, match="not available offline"):
        download("zjunlp/OneKE", tmp_path / "dl2", offline=True)


def test_readme_fence_lines_are_skipped(tree, tmp_path):
    root, files = tree
    lines = [f"{hashlib.md5(data).hexdigest()}  {name}" for name, data in files.items()]
    card = tmp_path / "md5-block.txt"  # the MD5 block as copied from KnowLM's README, fences included
    card.write_text("```shell\n" + "\n".join(lines) + "\n```\n")
    assert sorted(verify_checksums(root, card).verified) == sorted(files)
    card.write_text("```shell\n" + "\n".join(lines) + "\nnot a checksum\n```\n")
    with pytest.raises(KnowlmError, match=r"md5-block\.txt:5"):  # other stray lines still fail, with their line number
        verify_checksums(root, card)


def test_unreachable_hub_is_not_blamed_on_offline_settings(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(**kwargs):  # what snapshot_download raises when the hub cannot be reached and nothing is cached
        raise LocalEntryNotFoundError("An error happened while trying to locate the files on the Hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(KnowlmError) as info:
        download("zjunlp/OneKE", tmp_path / "dl")
    assert "cannot reach the Hugging Face hub" in str(info.value)
    assert "HF_HUB_OFFLINE" not in str(info.value) and "--offline" not in str(info.value)
    with pytest.raises(KnowlmError, match=r"not available offline \(--offline was given\)"):
        download("zjunlp/OneKE", tmp_path / "dl", offline=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(KnowlmError, match=r"not available offline \(HF_HUB_OFFLINE is set\)"):
        download("zjunlp/OneKE", tmp_path / "dl")
