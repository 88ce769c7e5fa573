"""Where the editable weights live in each model family, and hooks to read or nudge them.

ROME/MEMIT treat an MLP's output projection as a linear key-value memory: key = the projection's
input (d_ff), value = its output (d_model). LLaMA stores it as ``nn.Linear`` (weight out x in);
GPT-2 as ``Conv1D`` (weight in x out), so we always hand out an (out x in) *view* of the weight
and write through it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

from knowlm.errors import KnowlmError


@dataclass(frozen=True)
class LayerNames:
    """Module name templates (``{}`` = layer index) for one model family."""

    block: str  # a transformer block (its output is the residual stream)
    mlp_out: str  # the MLP output projection ROME/MEMIT rewrite
    transposed: bool = False  # Conv1D stores (in, out)


FAMILIES: dict[str, LayerNames] = {
    "llama": LayerNames("model.layers.{}", "model.layers.{}.mlp.down_proj"),
    "gpt2": LayerNames("transformer.h.{}", "transformer.h.{}.mlp.c_proj", transposed=True),
    "gptj": LayerNames("transformer.h.{}", "transformer.h.{}.mlp.fc_out"),
    "gpt_neox": LayerNames("gpt_neox.layers.{}", "gpt_neox.layers.{}.mlp.dense_4h_to_h"),
}
LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "internlm2", "baichuan", "yi", "gemma", "gemma2", "phi3"}


def family_of(model) -> str:
    model_type = getattr(model.config, "model_type", "")
    if model_type in FAMILIES:
        return model_type
    if model_type in LLAMA_LIKE or hasattr(getattr(model, "model", None), "layers"):
        return "llama"
    raise KnowlmError(f"knowledge editing does not know the layer names of model type {model_type!r}")


def names_for(model) -> LayerNames:
    return FAMILIES[family_of(model)]


def num_layers(model) -> int:
    config = model.config
    return int(getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer"))


def get_module(model, name: str):
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise KnowlmError(f"model has no module {name!r}; set the layer names for this model family") from None


def check_layers(model, layers: list[int], method: str) -> None:
    total = num_layers(model)
    bad = [layer for layer in layers if not 0 <= layer < total]
    if bad or not layers:
        raise KnowlmError(
            f"{method}: layers {layers} do not fit a model with {total} layers; pick a preset or --hparams file for this model"
        )


def weight_view(module, transposed: bool):
    """The weight as (out, in); in-place changes to the view change the parameter."""
    weight = module.weight
    return weight.t() if transposed else weight


@contextlib.contextmanager
def hooks(handles: list) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class StopForward(Exception):
    """Raised by a hook to skip the rest of the network once we have what we need."""


@contextlib.contextmanager
def capture(module, what: str = "input", stop: bool = False) -> Iterator[dict]:
    """Record a module's input (first positional argument) or output on each forward."""
    store: dict = {}

    def hook(mod, args, output):
        value = args[0] if what == "input" else output
        store["value"] = value[0] if isinstance(value, tuple) else value
        if stop:
            raise StopForward

    with hooks([module.register_forward_hook(hook)]):
        yield store


@contextlib.contextmanager
def edit_output(module, fn: Callable) -> Iterator[None]:
    """Replace a module's output by ``fn(output)`` (tuples: only the first element)."""

    def hook(mod, args, output):
        if isinstance(output, tuple):
            return (fn(output[0]), *output[1:])
        return fn(output)

    with hooks([module.register_forward_hook(hook)]):
        yield
