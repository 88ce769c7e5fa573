"""Shared fixtures: a tiny LLaMA and its SentencePiece tokenizer, built once per test session
from the bundled corpus, and loaded through the same code that loads real checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def pytest_configure(config):
    # Tiny models are overhead-bound: one intra-op thread is faster, and far faster on a busy machine.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random 2-layer, hidden-64 LLaMA with tokenizer, in Hugging Face layout (read-only: copy before changing)."""
    from knowlm.models.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tiny_model_dir) -> Path:
    """The tokenizer files live in the model directory."""
    return tiny_model_dir


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """(model, tokenizer) loaded once; tests must not modify the weights."""
    from knowlm.models import load

    return load(str(tiny_model_dir))


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave pictures and reports for people to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def pytest_collection_modifyitems(config, items):
    import torch

    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    skip_optin = pytest.mark.skip(reason="opt-in: set KNOWLM_OPTIN=1")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "optin" in item.keywords and os.environ.get("KNOWLM_OPTIN") != "1":
            item.add_marker(skip_optin)
