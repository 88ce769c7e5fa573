"""Hyperparameters per method, from YAML presets (per model family/size), the user's file, or an
EasyEdit hparams YAML as it is published (``alg_name: ROME`` ...).

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
from knowlm.utils.jsonl import read_text

METHODS = ("rome", "memit", "alphaedit", "ft", "grace", "ike")


@dataclass
class RomeHparams:
    layers: list[int] = field(default_factory=lambda: [5])
    # where the key is read: "subject_last" (ROME) or "last" (the prompt's last token, for models
    # that recall a fact at the prediction position rather than at the subject, e.g. toy models)
    fact_token: str = "subject_last"
    # value optimisation (the new "value" the edited memory should return)
    v_num_grad_steps: int = 25  # forward passes; Adam steps after all but the last (as the reference)
    v_lr: float = 0.5
    v_weight_decay: float = 1e-3  # times |delta| / |v0|^2
    clamp_norm_factor: float = 4.0  # |delta| <= factor * |original value|
    kl_factor: float = 0.0625  # KL(edited || original) on "{subject} is a"
    early_stop_loss: float = 0.05  # on the total loss (the reference's fixed 5e-2)
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
    context_templates: list[list[int]] = field(default_factory=lambda: [[10, 5]])  # MEMIT's fixed choice


@dataclass
class AlphaEditHparams(MemitHparams):
    nullspace_threshold: float = 2e-2  # eigenvalues of C below this span the null space (absolute)
    l2: float = 1.0  # ridge of the projected solve (EasyEdit's L2)


@dataclass
class FtHparams:
    layers: list[int] = field(default_factory=lambda: [21])
    modules: list[str] = field(default_factory=lambda: ["mlp_out"])  # "mlp_out" or "mlp" (every MLP weight)
    objective: str = "prompt_last"  # prompt_last (FT-L) | target_new (FT-M)
    lr: float = 5e-4
    num_steps: int = 25
    batch_size: int = 64
    weight_decay: float = 0.0
    norm_constraint: float = 0.0  # each weight stays within +-this of its original value; 0 = unbounded
    early_stop_loss: float = 1e-2
    seed: int = 0


@dataclass
class GraceHparams:
    layers: list[int] = field(default_factory=lambda: [27])
    module: str | None = None  # module name template ("model.layers.{}.mlp.down_proj"); None = the MLP output projection
    edit_lr: float = 1.0
    n_iter: int = 50
    eps: float = 1.0  # initial radius of a key's ball
    eps_expand: str = "coverage"  # coverage | none
    seed: int = 0


@dataclass
class IkeHparams:
    k: int = 16  # demonstrations retrieved per edit
    embedding_model: str | None = None  # local sentence-embedding model dir; None = TF-IDF character n-grams
    max_length: int = 2048  # context tokens kept (oldest demonstrations dropped first)


CLASSES: dict[str, type] = {"rome": RomeHparams, "memit": MemitHparams, "alphaedit": AlphaEditHparams,
                            "ft": FtHparams, "grace": GraceHparams, "ike": IkeHparams}
CHOICES = {"fact_token": ("subject_last", "last"), "objective": ("prompt_last", "target_new"),
           "eps_expand": ("coverage", "none")}


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


# EasyEdit hparams YAMLs: their algorithm names, renamed keys and keys with no meaning here
EASYEDIT_ALGS = {"ROME": "rome", "MEMIT": "memit", "AlphaEdit": "alphaedit", "FT": "ft", "GRACE": "grace", "IKE": "ike"}
EASYEDIT_RENAMES = {"context_template_length_params": "context_templates", "L2": "l2", "objective_optimization": "objective"}
EASYEDIT_IGNORED = {"alg_name", "model_name", "stats_dir", "device", "rewrite_module_tmp", "layer_module_tmp", "mlp_module_tmp",
                    "attn_module_tmp", "ln_f_module", "lm_head_module", "mom2_dataset", "mom2_dtype", "model_parallel", "fp16",
                    "v_loss_layer", "layer_selection", "max_length", "P_loc", "sentence_model_name", "results_dir",
                    "batch_size_ike", "dist_fn", "val_init", "val_train", "val_reg", "reg", "replacement", "num_pert",
                    "dropout", "inner_params"}
EASYEDIT_FIXED = {"dist_fn": "euc", "val_init": "cold", "val_train": "sgd", "replacement": "replace_last"}


def from_easyedit(values: dict, where: str) -> tuple[str, dict]:
    """(method, knowlm values) for an EasyEdit hparams mapping; settings we do not implement are an error."""
    method = EASYEDIT_ALGS.get(values["alg_name"])
    if method is None:
        raise KnowlmError(f"{where}: EasyEdit method {values['alg_name']!r} is not available; known: {', '.join(EASYEDIT_ALGS)}")
    for key, wanted in EASYEDIT_FIXED.items():
        if key in values and str(values[key]) != wanted:
            raise KnowlmError(f"{where}: {key}: {values[key]} is not supported (only {wanted})")
    out = {EASYEDIT_RENAMES.get(k, k): v for k, v in values.items() if k not in EASYEDIT_IGNORED}
    if method != "ft":
        out.pop("batch_size", None)  # single edits: EasyEdit asserts batch_size 1
    if method == "ft":
        out.pop("kl_factor", None)  # declared by EasyEdit's FT but never used
        if out.get("norm_constraint") is False:
            out["norm_constraint"] = 0.0
    if method == "grace":
        layer_param = values["inner_params"][0].replace("[", ".").replace("]", "")
        parts = layer_param.removesuffix(".weight").split(".")
        index = next(i for i, p in enumerate(parts) if p.isdigit())
        out["layers"] = [int(parts[index])]
        out["module"] = ".".join(parts[:index] + ["{}"] + parts[index + 1 :])
    return method, out


def build(method: str, values: dict[str, Any], where: str):
    if method not in CLASSES:
        raise KnowlmError(f"unknown editing method {method!r}; choose one of: {', '.join(METHODS)}")
    cls = CLASSES[method]
    known = {f.name for f in fields(cls)}
    values = {k: v for k, v in values.items() if k not in ("method", "description")}
    for key, value in list(values.items()):  # YAML reads 5e-1 (no dot) as a string
        if isinstance(value, str) and key not in ("module", "embedding_model") and key not in CHOICES:
            try:
                values[key] = float(value)
            except ValueError:
                pass
    unknown = sorted(set(values) - known)
    if unknown:
        raise KnowlmError(f"{where}: unknown {method} hyperparameters {unknown}; known: {sorted(known)}")
    for key, choices in CHOICES.items():
        if key in values and values[key] not in choices:
            raise KnowlmError(f"{where}: {key} must be one of {', '.join(choices)}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise KnowlmError(f"{where}: {exc}") from None


def _read_yaml(path: Path, where: str) -> dict:
    try:
        values = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as exc:
        raise KnowlmError(f"{where}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise KnowlmError(f"{where}: expected a mapping of hyperparameters")
    return values


def load_hparams(method: str, spec: str | dict | Any | None = None, model=None, **overrides: Any):
    """``spec``: None (pick by model), a preset name, a YAML path (knowlm or EasyEdit), a dict or a ready dataclass."""
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
        values = _read_yaml(path, where)
    if "alg_name" in values:
        theirs, values = from_easyedit(values, where)
        if theirs != method:
            raise KnowlmError(f"{where} holds EasyEdit {theirs} hyperparameters, not {method}")
    if values.get("method", method) != method:
        raise KnowlmError(f"{where} holds {values['method']} hyperparameters, not {method}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return build(method, values, where)
