"""LoRA adapters for serving: load several into one PEFT model, and pick one per batch row.

PEFT can mix adapters in one forward pass (``adapter_names``: one name per row, ``"__base__"`` for the
base model), which is how vLLM batches multi-LoRA traffic. PEFT passes those names with hooks it adds
and removes around each call; :class:`AdapterRouter` instead installs one hook per LoRA layer once and
reads the names from a thread-local, so the batching loop and a beam-search thread can run forward
passes for different adapters at the same time without touching shared model state.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

from knowlm.errors import KnowlmError

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


def check_adapter_dir(name: str, path: str) -> Path:
    """A LoRA adapter directory that can share batches, or a clear error (before any weights load)."""
    directory = Path(path).expanduser()
    config_path = directory / "adapter_config.json"
    if not config_path.is_file():
        raise KnowlmError(f"adapter {name}: {path} is not a PEFT adapter directory (no adapter_config.json)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise KnowlmError(f"adapter {name}: unreadable {config_path} ({exc})") from None
    if str(config.get("peft_type", "LORA")).upper() != "LORA" or config.get("use_dora"):
        kind = "DoRA" if config.get("use_dora") else config.get("peft_type")
        raise KnowlmError(
            f"adapter {name}: {kind} adapters cannot share batches with other requests; "
            f"merge it into the model (knowlm weights merge-lora) and serve the merged model"
        )
    return directory


def load_adapters(lm, adapters: dict[str, str]):
    """One PEFT model holding every named adapter (rows pick theirs through :class:`AdapterRouter`)."""
    from peft import PeftModel

    model = lm
    for index, (name, path) in enumerate(adapters.items()):
        directory = check_adapter_dir(name, path)
        try:
            if index == 0:
                model = PeftModel.from_pretrained(lm, str(directory), adapter_name=name)
            else:
                model.load_adapter(str(directory), adapter_name=name)
        except (OSError, ValueError, KeyError) as exc:
            raise KnowlmError(f"cannot load adapter {name} from {path}: {str(exc).splitlines()[0]}") from None
    model.eval()
    return model


class AdapterRouter:
    """Per-thread adapter choice for every row of a forward pass over a PEFT model."""

    def __init__(self, model):
        from peft.tuners.lora import LoraLayer
        from peft.utils.other import AuxiliaryTrainingWrapper

        self._local = threading.local()
        self.layers = 0
        for module in model.modules():
            if isinstance(module, (LoraLayer, AuxiliaryTrainingWrapper)):
                module.register_forward_pre_hook(self._inject, with_kwargs=True)
                self.layers += 1

    def _inject(self, module, args, kwargs):
        names = getattr(self._local, "names", None)
        if names is None:
            return None
        if isinstance(names, str):  # one adapter for every row (beam search expands the batch)
            names = [names] * len(args[0])
        kwargs["adapter_names"] = names
        return args, kwargs

    @contextmanager
    def rows(self, names: str | Sequence[str | None]):
        """Forward passes in this block use adapter ``names[i]`` for row ``i`` (None: the base model)."""
        previous = getattr(self._local, "names", None)
        self._local.names = (names or BASE) if isinstance(names, str) or names is None else [n or BASE for n in names]
        try:
            yield
        finally:
            self._local.names = previous
