"""The output policy (utils.outputs) and the atomic writers it relies on (utils.atomic)."""

import os
import stat

import pytest

from knowlm.errors import KnowlmError
from knowlm.utils.atomic import atomic_dir, atomic_path, atomic_write
from knowlm.utils.outputs import MODEL_FILES, check_output, check_outputs, check_prefix, save_model_dir


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_results_get_ordinary_permissions_not_tempfiles(tmp_path, umask_022):
    with atomic_write(tmp_path / "a.json") as handle:
        handle.write("{}")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "x").write_text("1")
    with atomic_path(tmp_path / "b.gguf") as tmp:
        tmp.write_bytes(b"GGUF")
    assert _mode(tmp_path / "a.json") == 0o644
    assert _mode(tmp_path / "d") == 0o755
    assert _mode(tmp_path / "b.gguf") == 0o644


def test_umask_is_respected(tmp_path):
    old = os.umask(0o077)
    try:
        with atomic_write(tmp_path / "a.json") as handle:
            handle.write("{}")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("1")
    finally:
        os.umask(old)
    assert (_mode(tmp_path / "a.json"), _mode(tmp_path / "d")) == (0o600, 0o700)


def test_overwrite_replaces_only_own_files_and_leaves_no_hidden_copies(tmp_path):
    out = tmp_path / "merged"
    with save_model_dir(out) as tmp:
        for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "config.json", "knowlm.json"):
            (tmp / name).write_text("old")
    (out / "notes.txt").write_text("mine")
    with save_model_dir(out) as tmp:
        for name in ("model.safetensors", "config.json", "knowlm.json"):
            (tmp / name).write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "knowlm.json", "model.safetensors", "notes.txt"]
    assert (out / "notes.txt").read_text() == "mine" and (out / "config.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no .tmp-/.old- sibling


def test_atomic_dir_refuses_nonempty_without_overwrite_and_cleans_up(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep").write_text("x")
    with pytest.raises(KnowlmError, match="already exists and is not empty; pass --overwrite"):
        with atomic_dir(out, overwrite=False) as tmp:
            (tmp / "a").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"] and [p.name for p in out.iterdir()] == ["keep"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_dir(empty, overwrite=False) as tmp:
        (tmp / "a").write_text("1")
    assert [p.name for p in empty.iterdir()] == ["a"]


def test_a_failed_write_keeps_the_old_output(tmp_path):
    out = tmp_path / "o"
    with atomic_dir(out) as tmp:
        (tmp / "config.json").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(out, owned=MODEL_FILES) as tmp:
            (tmp / "config.json").write_text("new")
            raise RuntimeError("boom")
    assert (out / "config.json").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_outputs_that_cannot_be_are_one_line_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    with pytest.raises(KnowlmError, match=r"^-o .*/dir is a directory; give a file name"):
        check_output(tmp_path / "dir", flag="-o")
    with pytest.raises(KnowlmError, match=r"is a file, not a directory"):
        check_output(tmp_path / "file" / "x.jsonl")
    with pytest.raises(KnowlmError, match=r"--workdir .*/file is a file; give a directory"):
        check_output(tmp_path / "file", kind="dir", flag="--workdir", overwrite=True)
    with pytest.raises(KnowlmError, match=r"is a directory"):
        with atomic_write(tmp_path / "dir"):
            pass
    with pytest.raises(KnowlmError, match=r"is a file, not a directory"):
        with atomic_write(tmp_path / "file" / "y"):
            pass


def test_existing_outputs_need_overwrite_and_inputs_are_never_outputs(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "x"}\n')
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    with pytest.raises(KnowlmError, match=r"already exists and is not empty; pass --overwrite"):
        check_output(out)
    assert check_output(out, overwrite=True) == out
    (tmp_path / "empty.jsonl").touch()
    assert check_output(tmp_path / "empty.jsonl") == tmp_path / "empty.jsonl"
    with pytest.raises(KnowlmError, match=r"is also an input of this command"):
        check_output(data, overwrite=True, inputs=[data])
    with pytest.raises(KnowlmError, match=r"is also an input"):
        check_output(tmp_path / "." / "in.jsonl", overwrite=True, inputs=[str(data)])
    with pytest.raises(KnowlmError, match=r"holds the input"):
        check_output(tmp_path, kind="dir", overwrite=True, inputs=[data])
    with pytest.raises(KnowlmError, match=r"--report and --plot name the same file"):
        check_outputs([(tmp_path / "r", "--report"), (tmp_path / "r", "--plot")])
    (tmp_path / "p.bin").write_bytes(b"1")
    with pytest.raises(KnowlmError, match=r"p.bin: the file already exists"):
        check_prefix(tmp_path / "p", (".bin", ".idx", ".json"))


def test_indexed_dataset_files_are_readable_by_others(tmp_path, umask_022):
    from knowlm.data.indexed import IndexedDatasetWriter

    with IndexedDatasetWriter(tmp_path / "d") as writer:
        writer.add_document([[1, 2, 3]])
    assert (_mode(tmp_path / "d.bin"), _mode(tmp_path / "d.idx")) == (0o644, 0o644)
