"""Fixtures for the serving tests: batching engines over the session's tiny model, a live server."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def serve_engine(tiny_model):
    """A running batching engine over the shared tiny model (read-only weights)."""
    from knowlm.infer.batching import BatchingEngine, EngineConfig

    model, tokenizer = tiny_model
    engine = BatchingEngine(model, tokenizer, EngineConfig(max_batch_size=16, num_threads=1)).start()
    yield engine
    engine.stop(timeout=5)


@pytest.fixture(scope="session")
def live_server(tiny_model, tiny_model_dir):
    """The real app on uvicorn on a free loopback port, small limits so fuzzing stays fast."""
    from knowlm.infer.batching import BatchingEngine, EngineConfig
    from knowlm.serve import BackgroundServer, ServeLimits, Service, create_app

    model, tokenizer = tiny_model
    engine = BatchingEngine(model, tokenizer, EngineConfig(max_batch_size=16, max_waiting=64, num_threads=1))
    limits = ServeLimits(max_body_bytes=20_000, max_tokens=40, default_max_tokens=16, completion_default_max_tokens=8)
    service = Service.from_engine(engine, str(tiny_model_dir), limits=limits)
    server = BackgroundServer(create_app(service, graceful_timeout=5)).start()
    yield server.url, service
    server.stop()


@pytest.fixture(scope="session")
def lora_dirs(tiny_model_dir, tmp_path_factory) -> dict[str, str]:
    """Two LoRA adapters ("ie", "chat") of the tiny model, random enough to change its answers."""
    import torch
    from peft import LoraConfig, get_peft_model

    from knowlm.models import load

    root = tmp_path_factory.mktemp("lora")
    paths = {}
    for seed, name in ((1, "ie"), (2, "chat")):
        base, _ = load(str(tiny_model_dir))
        torch.manual_seed(seed)
        lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        lora.save_pretrained(str(root / name))
        paths[name] = str(root / name)
    return paths


@pytest.fixture(scope="session")
def adapter_engine(tiny_model_dir, lora_dirs):
    """A running engine serving the base model and both adapters."""
    from knowlm.infer.batching import BatchingEngine

    engine = BatchingEngine.from_pretrained(str(tiny_model_dir), adapters=lora_dirs, max_batch_size=16, num_threads=1).start()
    yield engine
    engine.stop(timeout=5)
