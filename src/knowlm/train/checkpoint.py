"""Checkpoints that a killed run can resume from exactly.

``OUTPUT/checkpoints/step-00000010/`` holds the engine's model and optimizer state, one RNG
file per rank and ``trainer_state.json`` (step, data position, schedule, counters). It is
written under a ``.tmp-`` name and renamed only when every rank has finished, so a directory
named ``step-*`` is always complete; older ones beyond ``save_total_limit`` are deleted.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from knowlm.errors import KnowlmError

STATE_FILE = "trainer_state.json"
_STEP = re.compile(r"^step-(\d+)$")


def checkpoint_root(output: Path) -> Path:
    return Path(output) / "checkpoints"


def list_checkpoints(output: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(output)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _STEP.match(entry.name)
        if match and (entry / STATE_FILE).is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(output: Path) -> Path | None:
    found = list_checkpoints(output)
    return found[-1][1] if found else None


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(runtime, output: Path, step: int, trainer_state: dict, limit: int) -> Path:
    """All ranks call this. Returns the final checkpoint directory."""
    root = checkpoint_root(output)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    if runtime.env.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    runtime.barrier()
    runtime.save_state(tmp)
    torch.save(rng_state(), tmp / f"rng-{runtime.env.rank}.pt")
    runtime.barrier()
    if runtime.env.is_main:
        (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for _, old in list_checkpoints(output)[:-limit]:
            shutil.rmtree(old, ignore_errors=True)
    runtime.barrier()
    return final


def load_checkpoint(runtime, directory: Path) -> dict:
    """Restore engine state and this rank's RNG; return the trainer state."""
    state_file = Path(directory) / STATE_FILE
    if not state_file.is_file():
        raise KnowlmError(f"{directory} is not a complete checkpoint (no {STATE_FILE})")
    state = json.loads(state_file.read_text(encoding="utf-8"))
    if state.get("strategy") != runtime.strategy:
        raise KnowlmError(f"checkpoint {directory} was written with --strategy {state.get('strategy')}, "
                          f"this run uses {runtime.strategy}; resume with the same strategy")
    runtime.load_state(Path(directory))
    rng_file = Path(directory) / f"rng-{runtime.env.rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return state
