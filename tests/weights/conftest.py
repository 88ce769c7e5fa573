"""Fixtures for the weight tools: small perturbed copies of the session's tiny LLaMA."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.weights.weights_helpers import perturbed_copy


@pytest.fixture(scope="session")
def weights_target_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return perturbed_copy(tiny_model_dir, tmp_path_factory.mktemp("wtarget") / "target")
