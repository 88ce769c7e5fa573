"""Shared fixtures: a tiny LLaMA and its SentencePiece tokenizer, built once per test session
from the bundled corpus, and loaded through the same code that loads real checkpoints."""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # shared test helpers: scripted_generator.py


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
def ie_model_dir() -> Path:
    """The IE model knowlm's recipe trained (``knowlm demo --retrain``), shipped in the package: a tiny
    LLaMA that extracts entities and relations (read-only)."""
    from knowlm.train import ie_recipe

    return ie_recipe.shipped_dir("tuned")


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tiny_model_dir) -> Path:
    """The tokenizer files live in the model directory."""
    return tiny_model_dir


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """(model, tokenizer) loaded once; tests must not modify the weights."""
    from knowlm.models import load

    return load(str(tiny_model_dir))


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """``cli("extract", "-m", ..., input="stdin text") -> CliResult``: the ``knowlm`` command, run the one way
    every test runs it.

    In this process, through the real entry point ``knowlm.cli.main.main`` (so a KnowlmError becomes one
    ``error:`` line on stderr and exit 2, exactly as for a user), with stdout and stderr captured apart.
    In-process rather than a subprocess: each call costs milliseconds instead of a 3-5 s interpreter and
    torch start on a 2-core machine, and a test can substitute a scripted generator with ``monkeypatch``.
    Tests about processes themselves (a killed run that resumes, SIGTERM to a server, torchrun, a
    blocked import) start a subprocess because that is what they test.
    """
    from knowlm.cli.main import main

    monkeypatch.setenv("COLUMNS", "200")  # help and summaries are not wrapped mid-word

    def run(*args, input: str | None = None) -> CliResult:
        capsys.readouterr()  # only this call's output
        monkeypatch.setattr(sys, "stdin", io.StringIO(input or ""))
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run


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
