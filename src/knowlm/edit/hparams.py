"""Hyperparameters per method, from YAML presets (per model family/size) or the user's file.

Presets live in ``knowlm/edit/hparams/<method>/<name>.yaml``. Without an explicit choice we pick
one from the model: ``tiny`` for test-sized models, ``llama-7b`` / ``llama-13b`` by hidden size,
``gpt2-xl`` for GPT-2. Unknown keys are an error, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from knowlm.errors import KnowlmError

METHODS = ("rome", "memit", "ft", "ike")


@dataclass
class RomeHparams:
    layers: list[int] = field(default_factory=lambda: [5])
    # where the key is read: "subject_last" (ROME) or "last" (the prompt's last token, for models
    # that recall a fact at the prediction position rather than at the subject, e.g. toy models)
    fact_token: str = "subject_last"
    # value optimisation (the new "value" the edited memory should return)
    v_num_grad_steps: int = 25
    v_lr: float = 0.5
    v_weight_decay: float = 1e-3
    clamp_norm_factor: float = 4.0  # |delta| <= factor * |original value|
    kl_factor: float = 0.0625  # keeps "{subject} is a" predictions close to the original
    early_stop_loss: float = 0.05
    # key statistics (second moment of the layer's inputs over a corpus)
    mom2_adjustment: bool = True
    mom2_n_samples: int = 100000
    mom2_max_length: int = 256  # tokens per statistics sample
    mom2_damping: float = 0.0  # ridge added to the diagonal, relative to its mean (tiny corpora are rank-deficient)
    # random prefixes the key is averaged over: [[tokens, count], ...]
    context_templates: list[list[int]] = field(default_factory=lambda: [[5, 10], [10, 10]])
    seed: int = 0


@dataclass
class MemitHparams(RomeHparams):
    layers: list[int] = field(default_factory=lambda: [4, 5, 6, 7, 8])
    mom2_update_weight: float = 15000.0  # how strongly the preserved keys resist the update


@dataclass
class FtHparams:
    layers: list[int] = field(default_factory=lambda: [21])
    modules: list[str] = field(default_factory=lambda: ["mlp_out"])  # "mlp_out" or "mlp" (every MLP weight)
    lr: float = 5e-4
    num_steps: int = 25
    norm_constraint: float = 5e-5  # each weight stays within +-this of its original value (FT-L); 0 = unbounded
    early_stop_loss: float = 1e-2
    seed: int = 0


@dataclass
class IkeHparams:
    k: int = 32  # demonstrations retrieved per edit
    embedding_model: str | None = None  # local sentence-embedding model dir; None = TF-IDF character n-grams
    max_length: int = 2048  # context tokens kept (oldest demonstrations dropped first)


CLASSES: dict[str, type] = {"rome": RomeHparams, "memit": MemitHparams, "ft": FtHparams, "ike": IkeHparams}


def preset_names(method: str) -> list[str]:
    folder = resources.files("knowlm.edit") / "hparams" / method
    return sorted(Path(str(p)).stem for p in folder.iterdir() if str(p).endswith(".yaml"))


def default_preset(model) -> str:
    """The preset that suits this model's family and size."""
    config = model.config
    hidden = int(getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0))
    if getattr(config, "model_type", "") == "gpt2":
        return "gpt2-xl" if hidden >= 1600 else "tiny"
    if hidden <= 512:
        return "tiny"
    return "llama-13b" if hidden >= 5120 else "llama-7b"


def build(method: str, values: dict[str, Any], where: str):
    if method not in CLASSES:
        raise KnowlmError(f"unknown editing method {method!r}; choose one of: {', '.join(METHODS)}")
    cls = CLASSES[method]
    known = {f.name for f in fields(cls)}
    values = {k: v for k, v in values.items() if k not in ("method", "description")}
    unknown = sorted(set(values) - known)
    if unknown:
        raise KnowlmError(f"{where}: unknown {method} hyperparameters {unknown}; known: {sorted(known)}")
    if values.get("fact_token", "subject_last") not in ("subject_last", "last"):
        raise KnowlmError(f"{where}: fact_token must be subject_last or last")
    try:
        return cls(**values)
    except TypeError as exc:
        raise KnowlmError(f"{where}: {exc}") from None


def load_hparams(method: str, spec: str | dict | Any | None = None, model=None, **overrides: Any):
    """``spec``: None (pick by model), a preset name, a YAML path, a dict or a ready dataclass."""
    if method not in CLASSES:
        raise KnowlmError(f"unknown editing method {method!r}; choose one of: {', '.join(METHODS)}")
    if isinstance(spec, CLASSES[method]):
        values, where = asdict(spec), "hparams"
    elif isinstance(spec, dict):
        values, where = dict(spec), "hparams"
    else:
        name = spec or (default_preset(model) if model is not None else "tiny")
        path = Path(name)
        if path.suffix in (".yaml", ".yml") or path.is_file():
            if not path.is_file():
                raise KnowlmError(f"hyperparameter file not found: {path}")
            where = str(path)
        else:
            if name not in preset_names(method):
                raise KnowlmError(f"no {method} preset {name!r}; presets: {', '.join(preset_names(method))}")
            path = Path(str(resources.files("knowlm.edit") / "hparams" / method / f"{name}.yaml"))
            where = f"preset {method}/{name}"
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise KnowlmError(f"{where}: invalid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(values, dict):
            raise KnowlmError(f"{where}: expected a mapping of hyperparameters")
        if values.get("method", method) != method:
            raise KnowlmError(f"{where} holds {values['method']} hyperparameters, not {method}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return build(method, values, where)
