"""AlphaEdit (Fang et al., 2025): MEMIT whose updates are projected onto the null space of the
preserved keys, for lifelong (sequential) editing.

``P`` projects onto the eigenvectors of the key second moment ``C`` whose eigenvalues are below
``nullspace_threshold`` (the directions ordinary text hardly uses), so ``dW`` leaves the keys
of preserved knowledge alone: ``dW k ~ 0``. Keys of earlier edits are kept in ``K_p K_p^T`` and
enter the solve, so later edits do not undo them:

    dW^T = (P (K K^T + K_p K_p^T) + l2 I)^-1 P K R^T

(EasyEdit's ``AlphaEdit_main``; here in float64). The residual targets and keys are MEMIT's.
"""

from __future__ import annotations

from knowlm.edit.common import EditContext
from knowlm.edit.layers import names_for
from knowlm.edit.memit import Solver, layer_keys, spread_updates
from knowlm.edit.requests import EditRequest
from knowlm.errors import KnowlmError


def null_space_projector(cov: "torch.Tensor", threshold: float) -> "torch.Tensor":
    """``U_0 U_0^T`` over the eigenvectors of ``cov`` with eigenvalue < ``threshold`` (float64)."""
    import torch

    values, vectors = torch.linalg.eigh(cov.to(torch.float64))
    small = vectors[:, values < threshold]
    return small @ small.T


def _projector(ctx: EditContext, name: str, threshold: float):
    """Projectors depend only on the statistics of the unedited model: computed once per run."""
    memo = ctx.memo.setdefault("alphaedit_projectors", {})
    if name not in memo:
        if ctx.stats is None:
            raise KnowlmError("alphaedit needs key statistics (the null space is computed from them)")
        memo[name] = null_space_projector(ctx.stats(name), threshold)
    return memo[name]


def alphaedit_solver(model, hp, ctx: EditContext) -> Solver:
    import torch

    preserved = ctx.state.setdefault("alphaedit_preserved", {})

    def solve(index: int, name: str, keys, resid):
        proj = _projector(ctx, name, hp.nullspace_threshold).to(keys.device)
        past = preserved.get(name)
        gram = keys @ keys.T + (past.to(keys.device) if past is not None else 0)
        eye = torch.eye(keys.shape[0], dtype=torch.float64, device=keys.device)
        update = torch.linalg.solve(proj @ gram + hp.l2 * eye, proj @ keys @ resid.T)  # (d_in, d_out)
        return update.T

    return solve


def apply_alphaedit(model, tokenizer, requests: list[EditRequest], hp, ctx: EditContext, guard) -> None:
    import torch

    spread_updates(model, tokenizer, requests, hp, ctx, guard, alphaedit_solver(model, hp, ctx))
    preserved = ctx.state.setdefault("alphaedit_preserved", {})
    names = names_for(model)
    for layer in hp.layers:  # the new facts' keys, read on the edited model, join the preserved set
        keys = layer_keys(model, tokenizer, layer, requests, hp, ctx).to(torch.float64)
        name = names.mlp_out.format(layer)
        preserved[name] = preserved.get(name, 0) + keys @ keys.T
