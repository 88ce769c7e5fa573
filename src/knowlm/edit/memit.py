"""MEMIT (Meng et al., 2023): many edits at once, spread over several MLP layers.

For every request we optimise the residual stream ``z`` at the subject's last token after the
last edited layer. Then, layer by layer (each on the model carrying the previous layers'
updates), the remaining gap ``z - h(z)`` is shared out among the layers still to edit and
written into each layer's output projection by a least-squares update that also preserves the
keys seen in a corpus (second moment ``C``): ``dW = R K^T (lambda C + K K^T)^-1``.

Keys are averaged in two steps, as MEMIT's ``compute_ks`` does: within the bare-prompt group
and within each prefix group, then over the groups.
"""

from __future__ import annotations

from typing import Callable

from knowlm.edit.common import EditContext, optimise_value, request_keys, subject_outputs, template_groups
from knowlm.edit.layers import names_for
from knowlm.edit.requests import EditRequest
from knowlm.edit.rome import apply_deltas

# solve(layer index, module name, keys (d_in x n), residuals (d_out x n)) -> delta (d_out x d_in); float64
Solver = Callable[[int, str, "torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def target_values(model, tokenizer, requests: list[EditRequest], hp, ctx: EditContext) -> "torch.Tensor":
    """``z`` per request (columns): the residual stream after the last edited layer that says the new target."""
    import torch

    names = names_for(model)
    flat = [t for g in template_groups(model, tokenizer, hp, ctx) for t in g]
    last_block = names.block.format(hp.layers[-1])
    return torch.stack([optimise_value(model, tokenizer, r, last_block, flat, hp, ctx.wrap) for r in requests], dim=1)


def layer_keys(model, tokenizer, layer: int, requests: list[EditRequest], hp, ctx: EditContext) -> "torch.Tensor":
    """Keys of ``requests`` at one layer's output projection, (d_in x n), two-step averaged."""
    name = names_for(model).mlp_out.format(layer)
    groups = template_groups(model, tokenizer, hp, ctx)
    return request_keys(model, tokenizer, name, requests, groups, hp.fact_token, grouped=True, wrap=ctx.wrap).T


def spread_updates(model, tokenizer, requests: list[EditRequest], hp, ctx: EditContext, guard, solve: Solver) -> None:
    """The MEMIT loop shared with AlphaEdit: targets once, then one solved update per layer."""
    import torch

    names = names_for(model)
    zs = target_values(model, tokenizer, requests, hp, ctx)
    last_block = names.block.format(hp.layers[-1])
    prompts = [ctx.wrap(r.prompt) for r in requests]
    subjects = [r.subject for r in requests]
    for i, layer in enumerate(hp.layers):
        name = names.mlp_out.format(layer)
        keys = layer_keys(model, tokenizer, layer, requests, hp, ctx)
        current = subject_outputs(model, tokenizer, last_block, prompts, subjects, hp.fact_token).T  # (d_out, n)
        resid = (zs - current) / (len(hp.layers) - i)
        delta = solve(i, name, keys.to(torch.float64), resid.to(torch.float64))
        apply_deltas(model, {name: delta.to(torch.float32)}, guard)


def memit_solver(model, hp, ctx: EditContext) -> Solver:
    import torch

    def solve(index: int, name: str, keys, resid):
        d_in = keys.shape[0]
        eye = torch.eye(d_in, dtype=torch.float64, device=keys.device)
        cov = ctx.stats(name).to(keys.device, torch.float64) if (ctx.stats is not None and hp.mom2_adjustment) else eye
        if hp.mom2_damping:
            cov = cov + hp.mom2_damping * cov.diagonal().mean() * eye
        adjusted = torch.linalg.solve(hp.mom2_update_weight * cov + keys @ keys.T, keys)  # (d_in, n)
        return resid @ adjusted.T

    return solve


def apply_memit(model, tokenizer, requests: list[EditRequest], hp, ctx: EditContext, guard) -> None:
    spread_updates(model, tokenizer, requests, hp, ctx, guard, memit_solver(model, hp, ctx))
