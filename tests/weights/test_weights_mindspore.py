"""MindSpore export read back by an independent protobuf reader (CI) and by mindspore (opt-in)."""

import numpy as np
import pytest

from knowlm.errors import KnowlmError
from knowlm.weights import export_mindspore
from tests.weights.weights_helpers import state_of

MS_DTYPES = {"Float32": np.float32, "Float16": np.float16}


def checkpoint_message_class():
    """Compile MindSpore's checkpoint.proto with protobuf's runtime (no generated code, no mindspore)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="knowlm_test_checkpoint.proto", package="knowlm_test", syntax="proto2")
    tensor = fdp.message_type.add(name="TensorProto")
    tensor.field.add(name="dims", number=1, type=F.TYPE_INT64, label=F.LABEL_REPEATED)
    tensor.field.add(name="tensor_type", number=2, type=F.TYPE_STRING, label=F.LABEL_REQUIRED)
    tensor.field.add(name="tensor_content", number=3, type=F.TYPE_BYTES, label=F.LABEL_REQUIRED)
    ckpt = fdp.message_type.add(name="Checkpoint")
    value = ckpt.nested_type.add(name="Value")
    value.field.add(name="tag", number=1, type=F.TYPE_STRING, label=F.LABEL_REQUIRED)
    value.field.add(name="tensor", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_REQUIRED, type_name=".knowlm_test.TensorProto")
    ckpt.field.add(name="value", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=".knowlm_test.Checkpoint.Value")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("knowlm_test.Checkpoint"))


def read_ckpt(path) -> dict[str, np.ndarray]:
    message = checkpoint_message_class()()
    message.ParseFromString(path.read_bytes())
    assert message.IsInitialized()
    out: dict[str, list] = {}
    for value in message.value:
        t = value.tensor
        out.setdefault(value.tag, []).append((tuple(t.dims), t.tensor_type, t.tensor_content))
    return {tag: np.frombuffer(b"".join(p[2] for p in parts), dtype=MS_DTYPES[parts[0][1]]).reshape(parts[0][0])
            for tag, parts in out.items()}


def test_protobuf_reader_sees_mindformers_names_and_equal_tensors(tiny_model_dir, tmp_path):
    import knowlm.weights.mindspore_export as mse

    source = state_of(tiny_model_dir)
    mse.SLICE_BYTES, saved = 100_000, mse.SLICE_BYTES  # force the embedding into several same-tag slices
    try:
        summary = export_mindspore(tiny_model_dir, tmp_path / "tiny.ckpt")
    finally:
        mse.SLICE_BYTES = saved
    tensors = read_ckpt(tmp_path / "tiny.ckpt")
    expected_names = {"model.tok_embeddings.embedding_weight", "model.norm_out.weight", "lm_head.weight",
                      "model.layers.0.attention.wq.weight", "model.layers.1.attention.wo.weight",
                      "model.layers.0.feed_forward.w1.weight", "model.layers.0.feed_forward.w2.weight",
                      "model.layers.1.feed_forward.w3.weight", "model.layers.0.attention_norm.weight",
                      "model.layers.0.ffn_norm.weight"}
    assert expected_names <= set(tensors) and len(tensors) == len(source) == summary.tensors
    for hf_name, ms_name in summary.names.items():
        np.testing.assert_array_equal(tensors[ms_name], source[hf_name].numpy())
    export_mindspore(tiny_model_dir, tmp_path / "half.ckpt", dtype="float16")
    half = read_ckpt(tmp_path / "half.ckpt")
    np.testing.assert_array_equal(half["lm_head.weight"], source["lm_head.weight"].half().numpy())


def test_suffix_must_be_ckpt(tiny_model_dir, tmp_path):
    with pytest.raises(KnowlmError, match=r"\.ckpt"):
        export_mindspore(tiny_model_dir, tmp_path / "model.bin")


@pytest.mark.optin
def test_mindspore_load_checkpoint_reads_it(tiny_model_dir, tmp_path):
    """Needs mindspore (800 MB wheel): KNOWLM_OPTIN=1."""
    import knowlm.weights.mindspore_export as mse

    ms = pytest.importorskip("mindspore")
    source = state_of(tiny_model_dir)
    summary = export_mindspore(tiny_model_dir, tmp_path / "tiny.ckpt")
    mse.SLICE_BYTES, saved = 100_000, mse.SLICE_BYTES  # and with the embedding split into same-tag slices
    try:
        export_mindspore(tiny_model_dir, tmp_path / "sliced.ckpt")
    finally:
        mse.SLICE_BYTES = saved
    for name in ("tiny.ckpt", "sliced.ckpt"):
        params = ms.load_checkpoint(str(tmp_path / name))
        assert set(params) == set(summary.names.values())
        for hf_name, ms_name in summary.names.items():
            np.testing.assert_array_equal(params[ms_name].asnumpy(), source[hf_name].numpy())
