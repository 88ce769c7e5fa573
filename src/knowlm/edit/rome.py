"""ROME (Meng et al., 2022): a rank-one update of one MLP output projection.

The projection is read as a key-value memory ``v = W k``. For the subject's last token we find
the key ``k*`` (averaged over random prefixes) and the value ``v*`` that makes the model say the
new target, then solve ``min |W' - W|`` (in the metric of the key covariance ``C``) subject to
``W' k* = v*``:  ``W' = W + (v* - W k*) (C^-1 k*)^T / ((C^-1 k*)^T k*)``.
"""

from __future__ import annotations

from typing import Callable

from knowlm.edit.common import context_templates, mean_key, optimise_value, subject_keys, subject_outputs
from knowlm.edit.layers import get_module, names_for, weight_view
from knowlm.edit.requests import EditRequest


def whiten(cov: "torch.Tensor | None", keys: "torch.Tensor", damping: float) -> "torch.Tensor":
    """``C^-1 k`` (columns of ``keys``), with an optional ridge relative to C's mean diagonal."""
    import torch

    if cov is None:
        return keys
    c = cov.to(torch.float64)
    if damping:
        c = c + damping * c.diagonal().mean() * torch.eye(c.shape[0], dtype=c.dtype, device=c.device)
    return torch.linalg.solve(c, keys.to(torch.float64)).to(torch.float32)


def rome_deltas(model, tokenizer, request: EditRequest, hp, stats: Callable[[str], "torch.Tensor"] | None) -> dict:
    """``{module name: delta (out x in, float32)}`` for one request (nothing is changed yet)."""
    import torch

    names = names_for(model)
    templates = context_templates(model, tokenizer, hp.context_templates, hp.seed)
    deltas = {}
    for layer in hp.layers:
        name = names.mlp_out.format(layer)
        k_mean = mean_key(model, tokenizer, name, request, templates, hp.fact_token)
        cov = stats(name) if (stats is not None and hp.mom2_adjustment) else None
        u = whiten(cov, k_mean.unsqueeze(1), hp.mom2_damping).squeeze(1)
        u = u / u.norm()
        target = optimise_value(model, tokenizer, request, name, templates, hp)
        k_cur = subject_keys(model, tokenizer, name, [request.prompt], [request.subject], hp.fact_token)[0]
        v_cur = subject_outputs(model, tokenizer, name, [request.prompt], [request.subject], hp.fact_token)[0]
        right = (target - v_cur) / torch.dot(k_cur, u)
        deltas[name] = torch.outer(right, u)
    return deltas


def apply_deltas(model, deltas: dict, guard) -> None:
    """Add each delta to its weight (through the (out x in) view), remembering the originals."""
    import torch

    transposed = names_for(model).transposed
    with torch.no_grad():
        for name, delta in deltas.items():
            module = get_module(model, name)
            guard.remember(f"{name}.weight", module.weight)
            view = weight_view(module, transposed)
            view.add_(delta.to(view.dtype).to(view.device))


def apply_rome(model, tokenizer, requests: list[EditRequest], hp, stats, guard) -> None:
    """ROME edits one fact at a time; several requests are applied one after another."""
    for request in requests:
        apply_deltas(model, rome_deltas(model, tokenizer, request, hp, stats), guard)
