"""One clean voice: library deprecations and bars hidden unless --verbose, DeepSpeed op builds announced."""

import logging
import sys
import warnings

import pytest

from knowlm.utils import noise


def test_library_deprecations_hidden_and_shown_with_verbose(cli, monkeypatch):
    monkeypatch.delenv(noise.VERBOSE_ENV, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        cli("env", "--json")  # the root callback applies the policy
        warnings.warn("old API", FutureWarning)
        warnings.warn("something to know", UserWarning)
        warnings.warn("something to know", UserWarning)  # once
    assert [str(w.message) for w in caught] == ["something to know"]
    with warnings.catch_warnings(record=True) as caught:
        cli("--verbose", "env", "--json")
        warnings.warn("old API", FutureWarning)
    assert [str(w.message) for w in caught] == ["old API"]


def test_transformers_progress_bars_and_deprecation_notices_off(monkeypatch):
    monkeypatch.delenv(noise.VERBOSE_ENV, raising=False)
    with warnings.catch_warnings():
        noise.configure(False)
    from transformers.utils import logging as hf_logging

    assert not hf_logging.is_progress_bar_enabled()
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            if all(f.filter(record) for f in hf_logging._get_library_root_logger().handlers[0].filters):
                records.append(record.getMessage())

    logger = hf_logging.get_logger("transformers.utils.generic")
    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.warning("`past_key_values` is deprecated. Use `cache` instead.")
        logger.warning("Some weights of the model were not initialized")
    finally:
        logger.removeHandler(handler)
    assert records == ["Some weights of the model were not initialized"]
    hf_logging.enable_progress_bar()


def test_deepspeed_op_build_is_announced(monkeypatch):
    pytest.importorskip("deepspeed")
    from deepspeed.ops.op_builder.builder import OpBuilder

    built = []
    monkeypatch.setattr(OpBuilder, "jit_load", lambda self, verbose=True: built.append(self.name) or "module")
    monkeypatch.setenv("RANK", "0")
    said: list[str] = []
    noise.announce_deepspeed_builds(echo=said.append)

    class Op:
        name = "knowlm_test_op_never_built"

    assert OpBuilder.jit_load(Op()) == "module" and built == ["knowlm_test_op_never_built"]
    assert said[0].startswith("building DeepSpeed op knowlm_test_op_never_built (first use only, about a minute")
    assert said[1].startswith("built DeepSpeed op knowlm_test_op_never_built in ")
