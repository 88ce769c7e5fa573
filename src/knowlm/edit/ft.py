"""Constrained fine-tuning of chosen MLP weights on the new facts (EasyEdit's FT).

Two objectives, as in EasyEdit and the KnowEdit survey:

- ``prompt_last`` (FT-L, ROME's baseline): every target token is scored at the prompt's last
  position, ``-mean_t log p(t | prompt)``;
- ``target_new`` (FT-M): ordinary teacher-forced cross-entropy on the target tokens.

Each step runs over the requests in chunks of ``batch_size``; a chunk steps only while its loss
is at least ``early_stop_loss``, weights are clamped to ``+-norm_constraint`` around the original
(0 = unbounded), and training stops once a whole pass averages below ``early_stop_loss``.
Target tokens are the target as it follows the prompt, without special tokens (EasyEdit's
``prompt_last`` also scores the BOS id that a LLaMA tokenizer puts before a lone target).
It learns the edit but, lacking a notion of "which key", also shifts unrelated facts.
"""

from __future__ import annotations

from knowlm.edit.common import EditContext
from knowlm.edit.layers import get_module, names_for
from knowlm.edit.requests import EditRequest
from knowlm.edit.tokens import encode_with_target
from knowlm.errors import KnowlmError


def _parameters(model, hp) -> dict:
    names = names_for(model)
    chosen = {}
    for layer in hp.layers:
        for kind in hp.modules:
            if kind == "mlp_out":  # weight and bias (GPT-2 has one), as EasyEdit's name match picks both
                name = names.mlp_out.format(layer)
                for pname, param in get_module(model, name).named_parameters():
                    chosen[f"{name}.{pname}"] = param
            elif kind == "mlp":
                mlp_name = names.mlp_out.format(layer).rsplit(".", 1)[0]
                for pname, param in get_module(model, mlp_name).named_parameters():
                    chosen[f"{mlp_name}.{pname}"] = param
            else:
                raise KnowlmError(f"ft: unknown module kind {kind!r}; use mlp_out or mlp")
    return chosen


def _chunk_loss(model, tokenizer, chunk: list[EditRequest], hp, wrap, device):
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [encode_with_target(tokenizer, wrap(r.prompt), r.target_new) for r in chunk]
    if hp.objective == "prompt_last":
        rows = [ids[:start] for ids, start in encoded]
    else:
        rows = [ids[:-1] for ids, _ in encoded]
    width = max(len(r) for r in rows)
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    logp = torch.log_softmax(model(input_ids=input_ids, attention_mask=mask).logits.float(), -1)
    losses = []
    for i, (ids, start) in enumerate(encoded):
        target = torch.tensor(ids[start:], device=device)
        if hp.objective == "prompt_last":
            picked = logp[i, start - 1].gather(0, target)
        else:
            positions = torch.arange(start - 1, len(ids) - 1, device=device)
            picked = logp[i, positions, target]
        losses.append(-picked.mean())
    return torch.stack(losses).mean()


def apply_ft(model, tokenizer, requests: list[EditRequest], hp, ctx: EditContext, guard) -> None:
    import torch

    device = next(model.parameters()).device
    params = _parameters(model, hp)
    for name, param in params.items():
        guard.remember(name, param)
    originals = {name: p.detach().clone() for name, p in params.items()}
    all_params = list(model.parameters())
    saved = [p.requires_grad for p in all_params]
    for p in all_params:
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    torch.manual_seed(hp.seed)
    optimizer = torch.optim.Adam(list(params.values()), lr=hp.lr, weight_decay=hp.weight_decay)
    try:
        for _ in range(hp.num_steps):
            total = 0.0
            for i in range(0, len(requests), hp.batch_size):
                chunk = requests[i : i + hp.batch_size]
                optimizer.zero_grad()
                loss = _chunk_loss(model, tokenizer, chunk, hp, ctx.wrap, device)
                total += loss.item() * len(chunk)
                if loss.item() >= hp.early_stop_loss:
                    loss.backward()
                    optimizer.step()
                if hp.norm_constraint:
                    with torch.no_grad():
                        for name, p in params.items():
                            eps = hp.norm_constraint
                            p.copy_(torch.clamp(p, originals[name] - eps, originals[name] + eps))
            if total / len(requests) < hp.early_stop_loss:
                break
    finally:
        for p, flag in zip(all_params, saved):
            p.requires_grad_(flag)
        optimizer.zero_grad(set_to_none=True)
