"""MEMIT (Meng et al., 2023): many edits at once, spread over several MLP layers.

For every request we optimise the residual stream ``z`` at the subject's last token after the
last edited layer. Then, layer by layer, the remaining gap ``z - h(z)`` is shared out among the
layers still to edit and written into each layer's output projection by a least-squares update
that also preserves the keys seen in a corpus (second moment ``C``):
``dW = R K^T (lambda C + K K^T)^-1``.
"""

from __future__ import annotations

from knowlm.edit.common import context_templates, mean_key, optimise_value, subject_outputs
from knowlm.edit.layers import names_for
from knowlm.edit.requests import EditRequest
from knowlm.edit.rome import apply_deltas


def apply_memit(model, tokenizer, requests: list[EditRequest], hp, stats, guard) -> None:
    import torch

    names = names_for(model)
    templates = context_templates(model, tokenizer, hp.context_templates, hp.seed)
    last_block = names.block.format(hp.layers[-1])
    # targets for the residual stream after the last edited layer
    zs = torch.stack([optimise_value(model, tokenizer, r, last_block, templates, hp) for r in requests], dim=1)
    prompts = [r.prompt for r in requests]
    subjects = [r.subject for r in requests]
    for i, layer in enumerate(hp.layers):
        name = names.mlp_out.format(layer)
        keys = torch.stack([mean_key(model, tokenizer, name, r, templates, hp.fact_token) for r in requests], dim=1)  # (d_in, n)
        current = subject_outputs(model, tokenizer, last_block, prompts, subjects, hp.fact_token).T  # (d_out, n)
        resid = (zs - current) / (len(hp.layers) - i)
        k64 = keys.to(torch.float64)
        d_in = keys.shape[0]
        cov = stats(name).to(torch.float64) if (stats is not None and hp.mom2_adjustment) else torch.eye(
            d_in, dtype=torch.float64, device=keys.device)
        if hp.mom2_damping:
            cov = cov + hp.mom2_damping * cov.diagonal().mean() * torch.eye(d_in, dtype=cov.dtype, device=cov.device)
        adjusted = torch.linalg.solve(hp.mom2_update_weight * cov + k64 @ k64.T, k64)  # (d_in, n)
        delta = (resid.to(torch.float64) @ adjusted.T).to(torch.float32)  # (d_out, d_in)
        apply_deltas(model, {name: delta}, guard)
