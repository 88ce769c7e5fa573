"""FT-L: fine-tune chosen MLP weights on the new facts, each weight kept within ``norm_constraint``
of its original value. The baseline the locate-then-edit methods are measured against: it learns
the edit but, lacking a notion of "which key", also shifts unrelated facts."""

from __future__ import annotations

from knowlm.edit.layers import get_module, names_for
from knowlm.edit.requests import EditRequest
from knowlm.edit.tokens import encode_with_target
from knowlm.errors import KnowlmError


def _parameters(model, hp) -> dict:
    names = names_for(model)
    chosen = {}
    for layer in hp.layers:
        for kind in hp.modules:
            if kind == "mlp_out":
                module = get_module(model, names.mlp_out.format(layer))
                chosen[f"{names.mlp_out.format(layer)}.weight"] = module.weight
            elif kind == "mlp":
                mlp_name = names.mlp_out.format(layer).rsplit(".", 1)[0]
                for pname, param in get_module(model, mlp_name).named_parameters():
                    chosen[f"{mlp_name}.{pname}"] = param
            else:
                raise KnowlmError(f"ft: unknown module kind {kind!r}; use mlp_out or mlp")
    return chosen


def apply_ft(model, tokenizer, requests: list[EditRequest], hp, stats, guard) -> None:
    import torch

    device = next(model.parameters()).device
    params = _parameters(model, hp)
    for name, param in params.items():
        guard.remember(name, param)
    originals = {name: p.detach().clone() for name, p in params.items()}
    rows, labels = [], []
    for r in requests:
        ids, start = encode_with_target(tokenizer, r.prompt, r.target_new)
        rows.append(ids[:-1])
        labels.append([-100] * (start - 1) + ids[start:])
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id or 0
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    label_t = torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels], device=device)

    all_params = list(model.parameters())
    saved = [p.requires_grad for p in all_params]
    for p in all_params:
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    torch.manual_seed(hp.seed)
    optimizer = torch.optim.Adam(list(params.values()), lr=hp.lr)
    try:
        for _ in range(hp.num_steps):
            optimizer.zero_grad()
            logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), label_t.reshape(-1),
                                                     ignore_index=-100)
            if loss.item() < hp.early_stop_loss:
                break
            loss.backward()
            optimizer.step()
            if hp.norm_constraint:
                with torch.no_grad():
                    for name, p in params.items():
                        eps = hp.norm_constraint
                        p.copy_(torch.clamp(p, originals[name] - eps, originals[name] + eps))
    finally:
        for p, flag in zip(all_params, saved):
            p.requires_grad_(flag)
        optimizer.zero_grad(set_to_none=True)
