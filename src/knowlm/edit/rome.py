"""ROME (Meng et al., 2022): a rank-one update of one MLP output projection.

The projection is read as a key-value memory ``v = W k``. For the subject's last token we find
the key ``k*`` (averaged over random prefixes) and the value ``v*`` that makes the model say the
new target, then solve ``min |W' - W|`` (in the metric of the key covariance ``C``) subject to
``W' k* = v*``:  ``W' = W + (v* - W k) (C^-1 k*)^T / ((C^-1 k*)^T k)``.

With several layers, each layer's update is computed on the model that already carries the
updates of the layers before it (as the reference implementation does), so the layers do not
each write the whole edit. ``C^-1 k*`` is a float64 solve rather than the reference's float32
inverse: the same result where the inverse is accurate, and stable where C is ill-conditioned.
"""

from __future__ import annotations

from knowlm.edit.common import EditContext, optimise_value, request_keys, subject_keys, subject_outputs, template_groups
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
    return torch.linalg.solve(c, keys.to(c.device, torch.float64)).to(torch.float32)


def rome_layer_delta(model, tokenizer, request: EditRequest, layer: int, hp, ctx: EditContext) -> "torch.Tensor":
    """The (out x in) update of one layer for one request, on the model as it is now."""
    import torch

    names = names_for(model)
    name = names.mlp_out.format(layer)
    groups = template_groups(model, tokenizer, hp, ctx)
    k_mean = request_keys(model, tokenizer, name, [request], groups, hp.fact_token, grouped=False, wrap=ctx.wrap)[0]
    cov = ctx.stats(name) if (ctx.stats is not None and hp.mom2_adjustment) else None
    u = whiten(cov, k_mean.unsqueeze(1), hp.mom2_damping).squeeze(1).to(k_mean.device)
    u = u / u.norm()
    target = optimise_value(model, tokenizer, request, name, [t for g in groups for t in g], hp, ctx.wrap)
    bare = [ctx.wrap(request.prompt)]
    k_cur = subject_keys(model, tokenizer, name, bare, [request.subject], hp.fact_token)[0]
    v_cur = subject_outputs(model, tokenizer, name, bare, [request.subject], hp.fact_token)[0]
    right = (target - v_cur) / torch.dot(k_cur, u)
    return torch.outer(right, u)


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


def apply_rome(model, tokenizer, requests: list[EditRequest], hp, ctx: EditContext, guard) -> None:
    """ROME edits one fact at a time; several requests (and several layers) are applied one after another."""
    names = names_for(model)
    for request in requests:
        for layer in sorted(hp.layers):
            delta = rome_layer_delta(model, tokenizer, request, layer, hp, ctx)
            apply_deltas(model, {names.mlp_out.format(layer): delta}, guard)
