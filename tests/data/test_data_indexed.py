"""The exact MMIDIDX layout: our reader, an independent struct reader, and Megatron's reader."""

import struct
import warnings

import numpy as np
import pytest

from knowlm.data.indexed import IndexedDataset, IndexedDatasetWriter, merge
from knowlm.errors import KnowlmError

DOCS = [[[1, 5, 6], [7, 8]], [[9]], [[10, 11, 12, 13], [14], [2]]]


def independent_read(prefix):
    """Written from the format description only (DESIGN §3), not from our code."""
    with open(f"{prefix}.idx", "rb") as f:
        raw = f.read()
    assert raw[:9] == b"MMIDIDX\x00\x00"
    (version,) = struct.unpack("<Q", raw[9:17])
    (code,) = struct.unpack("<B", raw[17:18])
    seq_count, doc_count = struct.unpack("<QQ", raw[18:34])
    off = 34
    lengths = struct.unpack(f"<{seq_count}i", raw[off : off + 4 * seq_count])
    off += 4 * seq_count
    pointers = struct.unpack(f"<{seq_count}q", raw[off : off + 8 * seq_count])
    off += 8 * seq_count
    docs = struct.unpack(f"<{doc_count}q", raw[off : off + 8 * doc_count])
    off += 8 * doc_count
    assert off == len(raw)
    fmt, size = {8: ("H", 2), 4: ("i", 4), 1: ("B", 1), 5: ("q", 8)}[code]
    data = open(f"{prefix}.bin", "rb").read()
    seqs = [list(struct.unpack(f"<{n}{fmt}", data[p : p + n * size])) for n, p in zip(lengths, pointers)]
    return version, code, list(docs), seqs


def megatron_read(prefix):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset as MegatronDataset

    ds = MegatronDataset(str(prefix))
    return [ds[i].tolist() for i in range(len(ds))], ds.document_indices.tolist(), ds.sequence_lengths.tolist()


@pytest.mark.parametrize("dtype,code", [(np.uint16, 8), (np.int32, 4)])
def test_layout_read_back_three_ways(tmp_path, dtype, code):
    prefix = tmp_path / "ds"
    with IndexedDatasetWriter(prefix, dtype) as writer:
        for doc in DOCS:
            writer.add_document(doc)
    version, got_code, docs, seqs = independent_read(prefix)
    flat = [s for doc in DOCS for s in doc]
    assert (version, got_code) == (1, code)
    assert docs == [0, 2, 3, 6]
    assert seqs == flat
    mseqs, mdocs, mlens = megatron_read(prefix)
    assert mseqs == flat and mdocs == [0, 2, 3, 6] and mlens == [len(s) for s in flat]
    ds = IndexedDataset(prefix)
    assert len(ds) == 6 and ds.num_documents == 3 and ds.dtype == np.dtype(dtype)
    assert ds.sizes.dtype == np.int32 and ds.document_indices.dtype == np.int64
    assert [a.tolist() for a in ds.document(2)] == DOCS[2]
    assert ds[-1].tolist() == [2]
    assert isinstance(ds[0].base, (np.memmap, np.ndarray)) and not ds[0].flags.owndata  # a view, no copy


def test_writer_is_atomic_and_checks_ids(tmp_path):
    prefix = tmp_path / "bad"
    with pytest.raises(ValueError):
        with IndexedDatasetWriter(prefix, np.uint16) as writer:
            writer.add_document([[1, 2, 70000]])
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    with IndexedDatasetWriter(tmp_path / "empty", np.uint16):
        pass
    empty = IndexedDataset(tmp_path / "empty")
    assert len(empty) == 0 and empty.num_documents == 0


def test_merge_equals_writing_everything_at_once(tmp_path):
    for name, docs in (("a", DOCS[:2]), ("b", DOCS[2:])):
        with IndexedDatasetWriter(tmp_path / name, np.uint16) as writer:
            for doc in docs:
                writer.add_document(doc)
    with IndexedDatasetWriter(tmp_path / "all", np.uint16) as writer:
        for doc in DOCS:
            writer.add_document(doc)
    summary = merge([tmp_path / "a", tmp_path / "b"], tmp_path / "merged")
    for ext in ("bin", "idx"):
        assert (tmp_path / f"merged.{ext}").read_bytes() == (tmp_path / f"all.{ext}").read_bytes()
    assert summary["counts"]["sequences"] == 6
    with IndexedDatasetWriter(tmp_path / "wide", np.int32) as writer:
        writer.add_document([[1]])
    with pytest.raises(KnowlmError):
        merge([tmp_path / "a", tmp_path / "wide"], tmp_path / "x")
    with pytest.raises(KnowlmError):
        IndexedDataset(tmp_path / "missing")
