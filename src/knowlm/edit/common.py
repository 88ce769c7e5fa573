"""Pieces ROME and MEMIT share: random-prefix templates, subject keys, and the value optimisation."""

from __future__ import annotations

from knowlm.edit.layers import capture, edit_output, get_module
from knowlm.edit.requests import EditRequest
from knowlm.edit.tokens import encode_with_target, subject_last_token

_TEMPLATE_CACHE: dict[tuple, list[str]] = {}
_STARTS = ["The", "Therefore", "Because", "I", "You"]


def context_templates(model, tokenizer, spec: list[list[int]], seed: int = 0) -> list[str]:
    """``["{}", "<sampled prefix>. {}", ...]``: the key is averaged over these so it does not
    depend on what precedes the subject. Prefixes are sampled from the model itself (seeded)."""
    import torch

    key = (id(model), tuple(map(tuple, spec)), seed)
    if key in _TEMPLATE_CACHE:
        return _TEMPLATE_CACHE[key]
    templates = ["{}"]
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        torch.manual_seed(seed)
        for length, count in spec:
            starts = [_STARTS[i % len(_STARTS)] for i in range(count)]
            for start in starts:
                ids = tokenizer(start, return_tensors="pt")["input_ids"].to(device)
                with torch.no_grad():
                    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=length,
                                         do_sample=True, top_k=5, pad_token_id=tokenizer.pad_token_id)
                text = tokenizer.decode(out[0], skip_special_tokens=True)
                text = text.replace("{", " ").replace("}", " ").strip()
                templates.append(f"{text}. {{}}")
    _TEMPLATE_CACHE[key] = templates
    return templates


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


def subject_keys(model, tokenizer, module_name: str, texts: list[str], subjects: list[str],
                 fact_token: str = "subject_last") -> "torch.Tensor":
    """Input of ``module_name`` at each subject's last token: (len(texts), d_in)."""
    import torch

    device = next(model.parameters()).device
    rows = [tokenizer(t)["input_ids"] for t in texts]
    positions = [lookup_index(tokenizer, t, s, fact_token) for t, s in zip(texts, subjects)]
    ids, mask = _batch(tokenizer, rows, device)
    with torch.no_grad(), capture(get_module(model, module_name), "input") as store:
        model(input_ids=ids, attention_mask=mask)
    keys = store["value"]
    return torch.stack([keys[i, p] for i, p in enumerate(positions)]).to(torch.float32)


def subject_outputs(model, tokenizer, module_name: str, texts: list[str], subjects: list[str],
                    fact_token: str = "subject_last") -> "torch.Tensor":
    """Output of ``module_name`` at each subject's last token: (len(texts), d_out)."""
    import torch

    device = next(model.parameters()).device
    rows = [tokenizer(t)["input_ids"] for t in texts]
    positions = [lookup_index(tokenizer, t, s, fact_token) for t, s in zip(texts, subjects)]
    ids, mask = _batch(tokenizer, rows, device)
    with torch.no_grad(), capture(get_module(model, module_name), "output") as store:
        model(input_ids=ids, attention_mask=mask)
    out = store["value"]
    return torch.stack([out[i, p] for i, p in enumerate(positions)]).to(torch.float32)


def mean_key(model, tokenizer, module_name: str, request: EditRequest, templates: list[str],
             fact_token: str = "subject_last") -> "torch.Tensor":
    texts = [t.format(request.prompt) for t in templates]
    return subject_keys(model, tokenizer, module_name, texts, [request.subject] * len(texts), fact_token).mean(0)


def optimise_value(model, tokenizer, request: EditRequest, module_name: str, templates: list[str], hp) -> "torch.Tensor":
    """The output ``module_name`` should give at the subject's last token so that the model predicts
    ``target_new`` after the prompt (under every prefix), while the model's view of the subject
    itself ("{subject} is a") stays close to the original (KL term).

    Returns the target output vector (d_out, float32)."""
    import torch

    device = next(model.parameters()).device
    full_ids, start = encode_with_target(tokenizer, request.prompt, request.target_new)
    target_ids = full_ids[start:]
    rows, labels, lookups = [], [], []
    for template in templates:
        text = template.format(request.prompt)
        prompt_ids = tokenizer(text)["input_ids"]
        row = prompt_ids + target_ids[:-1]
        rows.append(row)
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
    module = get_module(model, module_name)

    # the original output at the subject (first template = the bare prompt)
    with torch.no_grad(), capture(module, "output") as store:
        logits = model(input_ids=ids, attention_mask=mask).logits
    original = store["value"][0, lookups[0]].detach().to(torch.float32)
    kl_pos = lookups[-1]
    init_kl = torch.log_softmax(logits[-1, kl_pos].float(), -1).detach()

    delta = torch.zeros_like(original, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=hp.v_lr)
    max_norm = hp.clamp_norm_factor * original.norm()
    rows_idx = torch.arange(len(rows), device=device)
    lookup_t = torch.tensor(lookups, device=device)

    def add_delta(out):
        out = out.clone()
        out[rows_idx, lookup_t] = out[rows_idx, lookup_t] + delta.to(out.dtype)
        return out

    params = [p for p in model.parameters()]
    saved_grad = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        for _ in range(hp.v_num_grad_steps):
            optimizer.zero_grad()
            with edit_output(module, add_delta):
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:n_rewrite], -1)
            valid = label_t != -100
            # label at position i is the token predicted from position i
            picked = torch.gather(logp, 2, label_t.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            nll = -((picked * valid).sum(1) / valid.sum(1)).mean()
            kl_logp = torch.log_softmax(logits[-1, kl_pos], -1)
            kl = torch.nn.functional.kl_div(kl_logp, init_kl, log_target=True, reduction="sum")
            decay = hp.v_weight_decay * delta.norm() ** 2 / original.norm().clamp(min=1e-8) ** 2
            loss = nll + hp.kl_factor * kl + decay
            if nll.item() < hp.early_stop_loss:
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
