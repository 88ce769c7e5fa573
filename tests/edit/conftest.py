"""Fixtures for the editing tests: the trained fact model (see ``_edit_world.py``) and a facts corpus."""

from __future__ import annotations

from pathlib import Path

import sys

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the test modules import the helpers in _edit_world.py
from _edit_world import fact_lines, train_world  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run faster on one thread, and the suite shares two cores with other tests."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def world_dir(request, tmp_path_factory) -> Path:
    """The trained fact model (read-only). Cached in pytest's cache, keyed by this file's content."""
    import hashlib
    import shutil

    import torch

    digest = hashlib.sha256((Path(__file__).parent / "_edit_world.py").read_bytes()).hexdigest()[:12]
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider: train in a temp dir
    cached = Path(cache.mkdir(f"knowlm-edit-world-{digest}")) if cache else tmp_path_factory.mktemp("world-cache")
    if (cached / "model" / "config.json").is_file():
        return cached / "model"
    threads = torch.get_num_threads()
    try:
        work = tmp_path_factory.mktemp("world")
        model = train_world(work)
    finally:
        torch.set_num_threads(threads)
    shutil.copytree(model, cached / "model.tmp", dirs_exist_ok=True)
    (cached / "model.tmp").rename(cached / "model")
    return cached / "model"


@pytest.fixture(scope="session")
def gpt2_dir(request, tmp_path_factory) -> Path:
    """The trained tiny GPT-2 (read-only), cached like the LLaMA world."""
    import hashlib

    from _edit_world import build_gpt2

    digest = hashlib.sha256((Path(__file__).parent / "_edit_world.py").read_bytes()).hexdigest()[:12]
    cache = getattr(request.config, "cache", None)
    cached = Path(cache.mkdir(f"knowlm-edit-gpt2-{digest}")) if cache else tmp_path_factory.mktemp("gpt2-cache")
    if not (cached / "model" / "config.json").is_file():
        build_gpt2(cached / "model.tmp")
        (cached / "model.tmp").rename(cached / "model")
    return cached / "model"


@pytest.fixture(scope="session")
def stats_texts() -> list[str]:
    """Corpus texts for key statistics: enough tokens for a full-rank second moment."""
    from knowlm.resources import iter_corpus

    return [d["text"] for d in iter_corpus()][:60]


@pytest.fixture(scope="session")
def stats_corpus(stats_texts, tmp_path_factory) -> Path:
    import json

    path = tmp_path_factory.mktemp("stats") / "texts.jsonl"
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in stats_texts), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def shared_stats_dir(tmp_path_factory) -> Path:
    """One statistics cache for the session: entries are keyed by the weights, so tests share them safely."""
    return tmp_path_factory.mktemp("edit-stats")


@pytest.fixture(scope="session")
def facts_corpus(tmp_path_factory) -> Path:
    import json

    path = tmp_path_factory.mktemp("corpus") / "facts.jsonl"
    path.write_text("".join(json.dumps({"text": line}) + "\n" for line in fact_lines()), encoding="utf-8")
    return path


@pytest.fixture
def world(world_dir):
    """A fresh (model, tokenizer) per test: tests may edit it."""
    from knowlm.models import load

    return load(str(world_dir), device="cpu")
