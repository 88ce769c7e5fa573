"""Pieces ROME, MEMIT and AlphaEdit share: random-prefix templates, subject keys, and the value optimisation.

The value objective is the reference one (ROME's ``compute_v`` / MEMIT's ``compute_z``, as in
EasyEdit): for a vector ``delta`` added to a module's output at the subject's lookup token,

    loss = NLL(target | every prefixed prompt)
         + kl_factor * KL(edited || original) on "{subject} is a"
         + v_weight_decay * |delta| / |v0|^2

Adam runs ``v_num_grad_steps`` forward passes and steps after all but the last; it stops early
once the *total* loss is below ``early_stop_loss``; ``delta`` is kept within
``clamp_norm_factor * |v0|``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from knowlm.edit.layers import capture, edit_output, get_module
from knowlm.edit.requests import EditRequest
from knowlm.edit.tokens import encode_with_target, subject_last_token

_TEMPLATE_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> {(spec, seed): groups}
_STARTS = ["The", "Therefore", "Because", "I", "You"]


def identity(text: str) -> str:
    return text


@dataclass
class EditContext:
    """What an editing method needs besides the model and the requests.

    stats: module name -> second moment of its inputs (None: no covariance adjustment).
    templates: prefix groups to use instead of sampling them (tests and reproducible runs).
    wrap: turns a bare prompt into what the model is asked (a chat template), identity for base models.
    state: what lifelong methods carry from one edit to the next (AlphaEdit's preserved keys, GRACE's
    codebook); cleared whenever the original weights are restored.
    memo: values that depend only on the unedited model (AlphaEdit's projectors); kept.
    """

    stats: Callable[[str], Any] | None = None
    templates: list[list[str]] | None = None
    wrap: Callable[[str], str] = identity
    state: dict = field(default_factory=dict)
    memo: dict = field(default_factory=dict)


def context_templates(model, tokenizer, spec: list[list[int]], seed: int = 0) -> list[list[str]]:
    """``[["{}"], [prefix group 1], ...]``: one group per ``[length, count]`` of ``spec``.

    A prefix is text sampled from the model itself (top-5 sampling, seeded) after one of "The",
    "Therefore", "Because", "I", "You", ``length`` tokens long in all (the reference's
    ``max_out_len``), then ``". {}"``. Keys are averaged over the templates so they do not
    depend on what precedes the subject."""
    import torch

    cache = _TEMPLATE_CACHE.setdefault(model, {})
    key = (tuple(map(tuple, spec)), seed)
    if key in cache:
        return cache[key]
    groups: list[list[str]] = [["{}"]]
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        torch.manual_seed(seed)
        for length, count in spec:
            per_start, extra = divmod(count, len(_STARTS))
            starts = [s for s in _STARTS for _ in range(per_start)] + _STARTS[:extra]
            group = []
            for start in starts:
                ids = tokenizer(start, return_tensors="pt")["input_ids"].to(device)
                new = max(1, length - ids.shape[1])
                with torch.no_grad():
                    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                                         min_new_tokens=new, do_sample=True, top_k=5, top_p=1.0, temperature=1.0,
                                         pad_token_id=tokenizer.pad_token_id)
                text = tokenizer.decode(out[0], skip_special_tokens=True)
                text = text.replace("\n\n", " ").replace("{", " ").replace("}", " ").strip()
                group.append(f"{text}. {{}}")
            groups.append(group)
    cache[key] = groups
    return groups


def template_groups(model, tokenizer, hp, ctx: EditContext) -> list[list[str]]:
    return ctx.templates if ctx.templates is not None else context_templates(model, tokenizer, hp.context_templates, hp.seed)


def _batch(tokenizer, rows: list[list[int]], device):
    """Right-padded ids + mask (positions we index stay where they are)."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    return ids, mask


def lookup_index(tokenizer, text: str, subject: str, fact_token: str = "subject_last") -> int:
    """The token whose key/value an edit rewrites: the subject's last token, or the text's last."""
    if fact_token == "last":
        return len(tokenizer(text)["input_ids"]) - 1
    return subject_last_token(tokenizer, text, subject)


def token_reprs(model, tokenizer, module_name: str, texts: list[str], subjects: list[str], fact_token: str = "subject_last",
                what: str = "input", batch_size: int = 64) -> "torch.Tensor":
    """Input (or output) of ``module_name`` at each text's lookup token: (len(texts), d), float32."""
    import torch

    device = next(model.parameters()).device
    module = get_module(model, module_name)
    out = []
    for i in range(0, len(texts), batch_size):
        chunk, subs = texts[i : i + batch_size], subjects[i : i + batch_size]
        rows = [tokenizer(t)["input_ids"] for t in chunk]
        positions = [lookup_index(tokenizer, t, s, fact_token) for t, s in zip(chunk, subs)]
        ids, mask = _batch(tokenizer, rows, device)
        with torch.no_grad(), capture(module, what) as store:
            model(input_ids=ids, attention_mask=mask)
        values = store["value"]
        out += [values[j, p] for j, p in enumerate(positions)]
    return torch.stack(out).to(torch.float32)


def subject_keys(model, tokenizer, module_name, texts, subjects, fact_token="subject_last") -> "torch.Tensor":
    return token_reprs(model, tokenizer, module_name, texts, subjects, fact_token, "input")


def subject_outputs(model, tokenizer, module_name, texts, subjects, fact_token="subject_last") -> "torch.Tensor":
    return token_reprs(model, tokenizer, module_name, texts, subjects, fact_token, "output")


def request_keys(model, tokenizer, module_name: str, requests: list[EditRequest], groups: list[list[str]],
                 fact_token: str, grouped: bool, wrap: Callable[[str], str] = identity) -> "torch.Tensor":
    """One key per request (rows), averaged over the templates.

    ``grouped=False`` (ROME's ``compute_u``): the plain mean over all templates.
    ``grouped=True`` (MEMIT's ``compute_ks``): the mean within each group (bare prompt, each prefix
    length), then the mean of those group means, so the bare prompt weighs as much as all
    prefixed forms together."""
    import torch

    flat = [t for g in groups for t in g]
    texts = [wrap(t.format(r.prompt)) for r in requests for t in flat]
    subjects = [r.subject for r in requests for _ in flat]
    keys = subject_keys(model, tokenizer, module_name, texts, subjects, fact_token).view(len(requests), len(flat), -1)
    if not grouped:
        return keys.mean(1)
    bounds, start = [], 0
    for g in groups:
        bounds.append((start, start + len(g)))
        start += len(g)
    return torch.stack([keys[:, a:b].mean(1) for a, b in bounds], dim=1).mean(1)


def optimise_value(model, tokenizer, request: EditRequest, module_name: str, templates: list[str], hp,
                   wrap: Callable[[str], str] = identity) -> "torch.Tensor":
    """The output ``module_name`` should give at the subject's lookup token so that the model predicts
    ``target_new`` after the prompt (under every prefix), while its view of the subject itself
    ("{subject} is a") stays close to the original. Returns ``v0 + delta`` (d_out, float32)."""
    import torch

    device = next(model.parameters()).device
    bare = wrap(request.prompt)
    full_ids, start = encode_with_target(tokenizer, bare, request.target_new)
    target_ids = full_ids[start:]
    rows, labels, lookups = [], [], []
    for template in templates:
        text = wrap(template.format(request.prompt))
        prompt_ids = tokenizer(text)["input_ids"]
        rows.append(prompt_ids + target_ids[:-1])
        labels.append([-100] * (len(prompt_ids) - 1) + target_ids)
        lookups.append(lookup_index(tokenizer, text, request.subject, hp.fact_token))
    kl_text = f"{request.subject} is a"
    rows.append(tokenizer(kl_text)["input_ids"])
    lookups.append(lookup_index(tokenizer, kl_text, request.subject, hp.fact_token))
    n_rewrite = len(templates)

    ids, mask = _batch(tokenizer, rows, device)
    label_t = torch.full((n_rewrite, ids.shape[1]), -100, device=device)
    for i, lab in enumerate(labels):
        label_t[i, : len(lab)] = torch.tensor(lab, device=device)
    valid = label_t != -100
    module = get_module(model, module_name)
    rows_idx = torch.arange(len(rows), device=device)
    lookup_t = torch.tensor(lookups, device=device)

    with torch.no_grad(), capture(module, "output") as store:
        model(input_ids=ids, attention_mask=mask)
    original = store["value"][0, lookups[0]].detach().to(torch.float32)  # v0: the bare prompt ("{}" comes first)
    delta = torch.zeros_like(original, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=hp.v_lr)
    max_norm = hp.clamp_norm_factor * original.norm()

    def add_delta(out):
        out = out.clone()
        out[rows_idx, lookup_t] = out[rows_idx, lookup_t] + delta.to(out.dtype)
        return out

    params = list(model.parameters())
    saved_grad = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    init_kl = None
    try:
        for step in range(hp.v_num_grad_steps):
            optimizer.zero_grad()
            with edit_output(module, add_delta):
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
            kl_logp = torch.log_softmax(logits[-1, lookups[-1]], -1)
            if init_kl is None:  # delta is still zero: the original distribution
                init_kl = kl_logp.detach()
            logp = torch.log_softmax(logits[:n_rewrite], -1)
            picked = torch.gather(logp, 2, label_t.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            nll = -((picked * valid).sum(1) / len(target_ids)).mean()
            kl = (kl_logp.exp() * (kl_logp - init_kl)).sum()  # KL(edited || original)
            decay = delta.norm() / original.norm() ** 2
            loss = nll + hp.kl_factor * kl + hp.v_weight_decay * decay
            if loss.item() < hp.early_stop_loss or step == hp.v_num_grad_steps - 1:
                break
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                if delta.norm() > max_norm:
                    delta.mul_(max_norm / delta.norm())
    finally:
        for p, flag in zip(params, saved_grad):
            p.requires_grad_(flag)
    return (original + delta.detach()).to(torch.float32)
