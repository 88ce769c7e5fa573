"""Which prompt template a model gets: decided once, by ``resolve_template``, from the manifests,
the flag and the default, with clear errors for bad manifests and unknown names."""

import json
import logging

import pytest

from knowlm.errors import KnowlmError
from knowlm.models import DEFAULT_TEMPLATE, manifest_template, read_manifest, resolve_template


def _model(tmp_path, name, manifest):
    directory = tmp_path / name
    directory.mkdir()
    if manifest is not None:
        (directory / "knowlm.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest), encoding="utf-8")
    return directory


def test_adapter_manifest_then_model_manifest_then_default(tmp_path):
    model = _model(tmp_path, "model", {"template": "chatml"})
    adapter = _model(tmp_path, "adapter", {"template": "llama2"})
    bare = _model(tmp_path, "bare", None)
    silent_adapter = _model(tmp_path, "silent", {"produced_by": "x", "template": None})
    assert resolve_template(model, adapter) == "llama2"
    assert resolve_template(model, silent_adapter) == "chatml"
    assert resolve_template(model) == "chatml"
    assert resolve_template(bare) == DEFAULT_TEMPLATE == "alpaca"
    assert resolve_template("zjunlp/OneKE") == DEFAULT_TEMPLATE  # a hub id has no local manifest
    assert manifest_template(model, adapter) == ("llama2", adapter / "knowlm.json")
    assert manifest_template(bare) is None


def test_flag_wins_over_manifest_with_one_warning(tmp_path, caplog):
    model = _model(tmp_path, "model", {"template": "llama2"})
    with caplog.at_level(logging.WARNING, logger="knowlm"):
        assert resolve_template(model, None, "chatml") == "chatml"
        assert resolve_template(model, None, "llama2") == "llama2"  # agreeing flag: no warning
        assert resolve_template(_model(tmp_path, "bare", None), None, "raw") == "raw"  # nothing to contradict
    assert [r.getMessage() for r in caplog.records] == [f"template 'chatml' overrides 'llama2' recorded in {model / 'knowlm.json'}"]


@pytest.mark.parametrize("content, reason", [
    ("{not json", "unreadable manifest (Expecting property name"),
    ('["a list"]', "unreadable manifest (expected a JSON object, got list)"),
    (b"\xff\xfe", "unreadable manifest ("),
])
def test_corrupt_manifest_is_an_error_naming_the_file(tmp_path, content, reason):
    model = tmp_path / "model"
    model.mkdir()
    path = model / "knowlm.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for call in (lambda: resolve_template(model), lambda: resolve_template(model, None, "alpaca"), lambda: read_manifest(model)):
        with pytest.raises(KnowlmError) as caught:
            call()
        assert str(caught.value).startswith(f"{path}: {reason}")


def test_unknown_template_names_fail_listing_choices(tmp_path):
    model = _model(tmp_path, "model", {"template": "vicuna"})
    with pytest.raises(KnowlmError, match=r"knowlm.json: unknown prompt template 'vicuna'; choose one of: alpaca, llama2, chatml, raw, chat_template$"):
        resolve_template(model)
    with pytest.raises(KnowlmError, match=r"^unknown prompt template 'vicuna'; choose one of: alpaca, llama2, chatml, raw, chat_template$"):
        resolve_template(_model(tmp_path, "bare", None), None, "vicuna")
    with pytest.raises(KnowlmError, match="unknown prompt template 5"):
        resolve_template(_model(tmp_path, "numeric", {"template": 5}))
