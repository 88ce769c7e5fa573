"""An independent re-implementation of EasyEdit's ROME, MEMIT, AlphaEdit and FT updates, written from
its source (``easyeditor/models/rome/{compute_u,compute_v,rome_main,repr_tools,layer_stats}.py``,
``memit/{compute_z,compute_ks,memit_main}.py``, ``alphaedit/AlphaEdit_main.py``, ``ft/ft_main.py``)
and sharing no code with ``knowlm.edit``: the tests compare the weight updates of both on the same
model, request, layers, templates and statistics.

The structure, tokenisation (``tok.encode`` lengths, ``prompt + decode(target[:-1])``), loss terms,
loop and float32/float64 choices follow the reference; only its ``nethook`` tracing is replaced by
plain forward hooks on the same modules (``mlp`` for ROME's value, the block for MEMIT's).
"""

from __future__ import annotations

import numpy as np
import torch


class Spec:
    """Module names of a family, as EasyEdit's hparams YAMLs spell them."""

    def __init__(self, model):
        if model.config.model_type == "gpt2":
            self.rewrite, self.layer, self.mlp = "transformer.h.{}.mlp.c_proj", "transformer.h.{}", "transformer.h.{}.mlp"
            self.ln_f = model.transformer.ln_f
        else:
            self.rewrite, self.layer, self.mlp = "model.layers.{}.mlp.down_proj", "model.layers.{}", "model.layers.{}.mlp"
            self.ln_f = model.model.norm
        self.lm_w = model.get_output_embeddings().weight.T
        self.lm_b = getattr(model.get_output_embeddings(), "bias", None)


def _hidden(x):
    return x[0] if isinstance(x, tuple) else x


def trace(model, name, store, edit=None):
    module = model.get_submodule(name)

    def hook(mod, args, out):
        store["in"] = args[0]
        if edit is not None:
            h = _hidden(out)
            h = edit(h)
            out = (h, *out[1:]) if isinstance(out, tuple) else h
        store["out"] = _hidden(out)
        return out

    return module.register_forward_hook(hook)


# --- repr_tools ---------------------------------------------------------------------------------

def words_idxs(tok, templates, words):
    """get_words_idxs_in_templates(subtoken="last")."""
    out = []
    for template, word in zip(templates, words):
        prefix, suffix = template.split("{}")
        prefix_len = len(tok.encode(prefix))
        prompt_len = len(tok.encode(prefix + word))
        out.append([prefix_len + (prompt_len - prefix_len) - 1])
    return out


def traced_forward(model, module_name, enc) -> dict:
    """nethook.Trace(retain_input, retain_output) around one no-grad forward."""
    store: dict = {}
    handle = trace(model, module_name, store)
    try:
        with torch.no_grad():
            model(**enc)
    finally:
        handle.remove()
    return store


def reprs_at_idxs(model, tok, contexts, idxs, module_name, track):
    store = traced_forward(model, module_name, tok(contexts, padding=True, return_tensors="pt"))
    res = {k: torch.stack([store[k][i][idx].mean(0) for i, idx in enumerate(idxs)]) for k in ("in", "out")}
    return (res["in"], res["out"]) if track == "both" else res[track]


def reprs_at_word_tokens(model, tok, templates, words, module_name, track):
    idxs = words_idxs(tok, templates, words)
    return reprs_at_idxs(model, tok, [t.format(w) for t, w in zip(templates, words)], idxs, module_name, track)


# --- layer_stats ----------------------------------------------------------------------------------

def layer_mom2(model, tok, module_name, texts, max_length):
    """SecondMoment over every unpadded token of the texts, float32 (mom2_dtype), then / count."""
    mom2, count = None, 0
    for text in texts:
        store = traced_forward(model, module_name, tok(text, truncation=True, max_length=max_length, return_tensors="pt"))
        feats = store["in"][0].float()
        mom2 = feats.T @ feats if mom2 is None else mom2 + feats.T @ feats
        count += feats.shape[0]
    return mom2 / count


# --- ROME ------------------------------------------------------------------------------------------

def compute_u(model, tok, request, hp, spec, layer, templates, mom2, precision=torch.float32):
    cur = reprs_at_word_tokens(model, tok, [t.format(request["prompt"]) for t in templates],
                               [request["subject"]] * len(templates), spec.rewrite.format(layer), "in").mean(0)
    u = cur
    if hp["mom2_adjustment"]:
        inv_cov = torch.inverse(mom2.to(precision)).float()  # the reference: float32
        u = (inv_cov @ u.unsqueeze(1)).squeeze()
    return u / u.norm()


def _value_objective(model, tok, request, hp, rewrite_name, templates, logits_from):
    """The optimisation shared by compute_v (ROME) and compute_z (MEMIT); returns target_init + delta."""
    target_ids = tok.encode(request["target_new"], return_tensors="pt", add_special_tokens=False)[0]
    rewriting = [t.format(request["prompt"]) + tok.decode(target_ids[:-1]) for t in templates]
    kl_prompts = ["{} is a"]
    all_prompts = rewriting + kl_prompts
    input_tok = tok([p.format(request["subject"]) for p in all_prompts], return_tensors="pt", padding=True)
    targets = torch.tensor(-100).repeat(len(rewriting), *input_tok["input_ids"].shape[1:])
    for i in range(len(rewriting)):
        ex_len = input_tok["attention_mask"][i].sum()
        targets[i, ex_len - len(target_ids) : ex_len] = target_ids
    lookup = [words_idxs(tok, [p], [request["subject"]])[0][0] for p in all_prompts]
    delta = torch.zeros(model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.n_embd,
                        requires_grad=True)
    state = {"init": None}

    def edit_fn(h):
        if state["init"] is None:
            state["init"] = h[0, lookup[0]].detach().clone()
        h = h.clone()
        for i, idx in enumerate(lookup):
            h[i, idx, :] += delta
        return h

    opt = torch.optim.Adam([delta], lr=hp["v_lr"])
    for p in model.parameters():
        p.requires_grad_(False)
    kl_init = None
    for it in range(hp["v_num_grad_steps"]):
        opt.zero_grad()
        store = {}
        handle = trace(model, rewrite_name, store, edit_fn)
        try:
            out = model(**input_tok)
        finally:
            handle.remove()
        logits = out.logits
        kl_logits = torch.stack([logits[i - len(kl_prompts), idx, :] for i, idx in enumerate(lookup[-len(kl_prompts):])])
        kl_log_probs = torch.nn.functional.log_softmax(kl_logits, dim=1)
        if kl_init is None:
            kl_init = kl_log_probs.detach().clone()
        log_probs = logits_from(logits, store)[: len(rewriting)].log_softmax(2)
        loss = torch.gather(log_probs, 2, torch.where(targets != -100, targets, 0).unsqueeze(2)).squeeze(2)
        mask = (targets != -100).float()
        nll = (-(loss * mask).sum(1) / target_ids.size(0)).mean()
        kl = hp["kl_factor"] * torch.nn.functional.kl_div(kl_init, kl_log_probs, log_target=True, reduction="batchmean")
        wd = hp["v_weight_decay"] * (torch.norm(delta) / torch.norm(state["init"]) ** 2)
        loss = nll + kl + wd
        if loss < 5e-2:
            break
        if it == hp["v_num_grad_steps"] - 1:
            break
        loss.backward()
        opt.step()
        max_norm = hp["clamp_norm_factor"] * state["init"].norm()
        if delta.norm() > max_norm:
            with torch.no_grad():
                delta[...] = delta * max_norm / delta.norm()
    return state["init"] + delta.detach()


def compute_v(model, tok, request, hp, spec, layer, left, templates):
    target = _value_objective(model, tok, request, hp, spec.mlp.format(layer), templates, lambda logits, store: logits)
    cur_in, cur_out = reprs_at_word_tokens(model, tok, [request["prompt"]], [request["subject"]],
                                           spec.rewrite.format(layer), "both")
    cur_in, cur_out = cur_in[0], cur_out[0]
    return (target - cur_out) / torch.dot(cur_in, left)


def _as_weight(model, name, upd):
    w = model.get_submodule(name).weight
    return upd if upd.shape == w.shape else upd.T


def execute_rome(model, tok, request, hp, templates, mom2_fn, precision=torch.float32):
    """Deltas per weight (in the weight's own layout), model unchanged afterwards."""
    spec = Spec(model)
    request = dict(request, target_new=" " + request["target_new"],
                   prompt=request["prompt"].replace(request["subject"], "{}"))
    copies = {l: model.get_submodule(spec.rewrite.format(l)).weight.detach().clone() for l in hp["layers"]}
    deltas = {}
    for layer in sorted(hp["layers"]):
        name = spec.rewrite.format(layer)
        left = compute_u(model, tok, request, hp, spec, layer, templates, mom2_fn(name) if hp["mom2_adjustment"] else None,
                         precision)
        right = compute_v(model, tok, request, hp, spec, layer, left, templates)
        upd = _as_weight(model, name, left.unsqueeze(1) @ right.unsqueeze(0))
        with torch.no_grad():
            model.get_submodule(name).weight[...] += upd
        deltas[name + ".weight"] = upd
    with torch.no_grad():
        for l, w in copies.items():
            model.get_submodule(spec.rewrite.format(l)).weight[...] = w
    return deltas


# --- MEMIT / AlphaEdit -------------------------------------------------------------------------------

def compute_z(model, tok, request, hp, spec, layer, groups):
    loss_layer = spec.layer.format(model.config.num_hidden_layers - 1 if hasattr(model.config, "num_hidden_layers")
                                   else model.config.n_layer - 1)
    flat = [c for g in groups for c in g]

    def logits_from(logits, store):
        h = loss_store["out"]
        full = spec.ln_f(h)
        out = full @ spec.lm_w
        return out + spec.lm_b if spec.lm_b is not None else out

    loss_store: dict = {}
    module = model.get_submodule(loss_layer)
    handle = module.register_forward_hook(lambda m, a, o: loss_store.__setitem__("out", _hidden(o)))
    try:
        return _value_objective(model, tok, request, hp, spec.layer.format(layer), flat, logits_from)
    finally:
        handle.remove()


def compute_ks(model, tok, requests, spec, layer, groups):
    ks = reprs_at_word_tokens(model, tok, [c.format(r["prompt"]) for r in requests for g in groups for c in g],
                              [r["subject"] for r in requests for g in groups for _ in g], spec.rewrite.format(layer), "in")
    lens = [0] + [len(g) for g in groups]
    csum = np.cumsum(lens).tolist()
    total = sum(lens)
    ans = []
    for i in range(0, ks.size(0), total):
        ans.append(torch.stack([ks[i + csum[j] : i + csum[j + 1]].mean(0) for j in range(len(csum) - 1)]).mean(0))
    return torch.stack(ans)


def _memit_like(model, tok, requests, hp, groups, solve):
    spec = Spec(model)
    requests = [dict(r, target_new=r["target_new"] if r["target_new"][0] == " " else " " + r["target_new"],
                     prompt=r["prompt"].replace(r["subject"], "{}")) for r in requests]
    names = [spec.rewrite.format(l) for l in hp["layers"]]
    copies = {n: model.get_submodule(n).weight.detach().clone() for n in names}
    z_layer = hp["layers"][-1]
    zs = torch.stack([compute_z(model, tok, r, hp, spec, z_layer, groups) for r in requests], dim=1)
    deltas = {}
    for i, layer in enumerate(hp["layers"]):
        ks = compute_ks(model, tok, requests, spec, layer, groups).T
        cur = reprs_at_word_tokens(model, tok, [r["prompt"] for r in requests], [r["subject"] for r in requests],
                                   spec.layer.format(z_layer), "out").T
        targets = zs - cur
        resid = targets / (len(hp["layers"]) - i)
        upd = solve(i, names[i], ks, resid)
        upd = _as_weight(model, names[i], upd)
        with torch.no_grad():
            w = model.get_submodule(names[i]).weight
            w[...] = copies[names[i]] + upd.to(w.dtype)
        deltas[names[i] + ".weight"] = upd.float()
    after = requests
    with torch.no_grad():
        for n, w in copies.items():
            model.get_submodule(n).weight[...] = w
    return deltas, after


def execute_memit(model, tok, requests, hp, groups, mom2_fn):
    def solve(i, name, ks, resid):
        ks, resid = ks.double(), resid.double()
        cov = mom2_fn(name).float()
        adj = torch.linalg.solve(hp["mom2_update_weight"] * cov.double() + ks @ ks.T, ks)
        return resid @ adj.T

    return _memit_like(model, tok, requests, hp, groups, solve)[0]


def null_space(mom2, threshold, precision=torch.float32):
    u, s, _ = torch.linalg.svd(mom2.cpu().to(precision), full_matrices=False)
    small = (s < threshold).nonzero(as_tuple=True)[0]
    return u[:, small] @ u[:, small].T


def execute_alphaedit(model, tok, requests, hp, groups, mom2_fn, cache_c, precision=torch.float32):
    """One AlphaEdit call; ``cache_c`` (name -> preserved K K^T) is updated in place. The reference
    works in float32 (``precision``), which on an ill-conditioned C moves the null space itself."""
    spec = Spec(model)
    projections = {spec.rewrite.format(l): null_space(mom2_fn(spec.rewrite.format(l)), hp["nullspace_threshold"], precision)
                   for l in hp["layers"]}

    def solve(i, name, ks, resid):
        p = projections[name].to(precision)
        ks, resid = ks.to(precision), resid.to(precision)
        cache = cache_c.get(name, torch.zeros(ks.shape[0], ks.shape[0], dtype=precision)).to(precision)
        eye = torch.eye(ks.shape[0], dtype=precision)
        return torch.linalg.solve(p @ (ks @ ks.T + cache) + hp["L2"] * eye, p @ ks @ resid.T)

    deltas, prepared = _memit_like(model, tok, requests, hp, groups, solve)
    with torch.no_grad():  # the reference reads the new keys on the fully edited model
        for name, upd in deltas.items():
            model.get_submodule(name.removesuffix(".weight")).weight[...] += upd.float()
        for layer in hp["layers"]:
            ks = compute_ks(model, tok, prepared, spec, layer, groups).T
            name = spec.rewrite.format(layer)
            cache_c[name] = cache_c.get(name, torch.zeros(ks.shape[0], ks.shape[0], dtype=precision)) + (ks @ ks.T).to(precision)
        for name, upd in deltas.items():
            model.get_submodule(name.removesuffix(".weight")).weight[...] -= upd.float()
    return deltas


# --- FT -------------------------------------------------------------------------------------------------

def execute_ft(model, tok, requests, hp):
    spec = Spec(model)
    requests = [dict(r, target_new=" " + r["target_new"]) for r in requests]
    weights = {n: p for n, p in model.named_parameters() for l in hp["layers"] if spec.rewrite.format(l) in n}
    copies = {k: v.detach().clone() for k, v in weights.items()}
    texts, targets = [r["prompt"] for r in requests], [r["target_new"] for r in requests]
    opt = torch.optim.Adam(list(weights.values()), lr=hp["lr"], weight_decay=hp["weight_decay"])
    for name, w in model.named_parameters():
        w.requires_grad = name in weights
    for _ in range(hp["num_steps"]):
        total, count = 0.0, 0
        for i in range(0, len(texts), hp["batch_size"]):
            txt, tgt = texts[i : i + hp["batch_size"]], targets[i : i + hp["batch_size"]]
            inputs = tok(txt, return_tensors="pt", padding=True)
            target_ids = tok(tgt, return_tensors="pt", padding=True)["input_ids"]
            opt.zero_grad()
            bs = inputs["input_ids"].shape[0]
            if hp["objective_optimization"] == "prompt_last":
                last = inputs["attention_mask"].sum(dim=1) - 1
                loss_mask = torch.ne(target_ids, tok.unk_token_id) if tok.unk_token_id is not None else torch.ones_like(target_ids, dtype=torch.bool)
                probs = torch.nn.functional.log_softmax(model(**inputs).logits[torch.arange(bs), last], dim=-1)
                loss = (-(torch.gather(probs, 1, target_ids) * loss_mask).sum(1) / loss_mask.sum(1)).mean()
            else:
                full = tok([a + b for a, b in zip(txt, tgt)], return_tensors="pt", padding=True)
                n_prompt = [int((row != tok.pad_token_id).sum()) for row in inputs["input_ids"]]
                n_pad = [int((row == tok.pad_token_id).sum()) for row in full["input_ids"]]
                lens = [a + b for a, b in zip(n_pad, n_prompt)]
                width = full["input_ids"].size(1)
                label_mask = torch.tensor([[False] * n + [True] * (width - n) for n in lens])
                logits = model(**full).logits
                ce = torch.nn.functional.cross_entropy(logits[..., :-1, :].reshape(-1, logits.shape[-1]),
                                                       full["input_ids"][..., 1:].reshape(-1), reduction="none").view(bs, -1)
                loss = ((ce * label_mask[:, 1:]).sum(1) / label_mask[:, 1:].sum(1)).mean()
            total += loss.item() * bs
            count += bs
            if loss.item() >= 1e-2:
                loss.backward()
                opt.step()
            if isinstance(hp["norm_constraint"], float):
                eps = hp["norm_constraint"]
                with torch.no_grad():
                    for k, v in weights.items():
                        v[...] = torch.clamp(v, min=copies[k] - eps, max=copies[k] + eps)
        if total / count < 1e-2:
            break
    deltas = {k: (weights[k] - copies[k]).detach() for k in weights}
    with torch.no_grad():
        for k, v in weights.items():
            v[...] = copies[k]
    for p in model.parameters():
        p.requires_grad = False
    return deltas
