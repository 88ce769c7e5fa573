"""GRACE (Hartvigsen et al., 2023): lifelong editing with a discrete key-value codebook (adaptor)
on one layer; the model's weights never change.

At the chosen module, the input at the last prompt token is a query. If it lies within ``eps``
of a stored key, the module's output at that token is replaced by the key's value. An edit
adds a key (the query of the edit prompt) with a value trained by gradient descent to make
the model say the target (``n_iter`` Adam steps at ``edit_lr``; ``val_init: cold`` starts from
uniform noise). A new key close to an old one either widens the old key's ball (same target)
or both balls are halved (different targets), as in the reference ``GRACEAdapter``. Targets
are compared by their token ids (the reference compares the mean of the label tensors).

Evaluation of a GRACE-edited model is by greedy generation from the prompt alone (EasyEdit's
``vanilla_generation``), since the codebook is queried at the last token of each forward.
"""

from __future__ import annotations

from pathlib import Path

from knowlm.edit.common import EditContext
from knowlm.edit.layers import get_module, names_for
from knowlm.edit.requests import EditRequest
from knowlm.edit.tokens import encode_with_target
from knowlm.errors import KnowlmError


class GraceAdaptor:
    """A codebook hooked onto one module (``nn.Linear`` or GPT-2 ``Conv1D``)."""

    def __init__(self, module, name: str, init_eps: float, eps_expand: str = "coverage"):
        self.name = name
        self.init_eps = float(init_eps)
        self.eps_expand = eps_expand
        self.keys = self.values = self.eps = None
        self.labels: list[tuple[int, ...]] = []
        self.position: int | None = None  # query token (None: the last token of each forward)
        self.label: tuple[int, ...] | None = None
        self.new_value = None  # set while editing: the value a new key starts from
        self.handle = module.register_forward_hook(self._hook)

    def __len__(self) -> int:
        return 0 if self.keys is None else self.keys.shape[0]

    def remove(self) -> None:
        self.handle.remove()

    def _add(self, query, value) -> None:
        import torch

        if self.keys is None:
            self.keys, self.values = query.detach().clone(), value.detach().clone().unsqueeze(0)
            self.eps = torch.tensor([self.init_eps], device=query.device)
        else:
            self.keys = torch.cat([self.keys, query.detach()])
            self.values = torch.cat([self.values.detach(), value.detach().unsqueeze(0).to(self.values)])
            self.eps = torch.cat([self.eps, torch.tensor([self.init_eps], device=self.eps.device)])
        self.labels.append(self.label)
        self.values.requires_grad_(True)

    def _update_codebook(self, query) -> None:
        """The reference's first-iteration logic: add a key, widen a ball, or split two balls."""
        import torch

        if self.keys is None:
            self._add(query, self.new_value)
            return
        dists = torch.cdist(self.keys.float(), query.float())[:, 0]
        distance, nearest = dists.min(0)
        if distance > self.init_eps + self.eps[nearest]:
            self._add(query, self.new_value)
        elif self.labels[nearest] != self.label:
            self._add(query, self.new_value)
            self.eps[nearest] = distance / 2 - 1e-5
            self.eps[-1] = distance / 2
        elif distance > self.eps[nearest] and self.eps_expand == "coverage":
            self.eps[nearest] = distance

    def _hook(self, module, args, output):
        import torch

        hidden = args[0]
        pos = hidden.shape[1] - 1 if self.position is None else min(self.position, hidden.shape[1] - 1)
        query = hidden[:, pos]
        if self.new_value is not None:  # first forward of an edit
            self._update_codebook(query)
            self.new_value = None
        if self.keys is None:
            return output
        dists = torch.cdist(self.keys.float(), query.float())  # (keys, batch)
        distance, chosen = dists.min(0)
        hit = (distance <= self.eps[chosen]).unsqueeze(-1)
        out = output[0] if isinstance(output, tuple) else output
        out = out.clone()
        out[:, pos] = torch.where(hit, self.values[chosen].to(out.dtype), out[:, pos])
        return (out, *output[1:]) if isinstance(output, tuple) else out

    def state_dict(self) -> dict:
        return {"module": self.name, "keys": self.keys.detach().cpu(), "values": self.values.detach().cpu(),
                "eps": self.eps.detach().cpu(), "labels": [list(x) for x in self.labels], "init_eps": self.init_eps,
                "eps_expand": self.eps_expand}


def module_name(model, hp) -> str:
    names = names_for(model)
    if len(hp.layers) != 1:
        raise KnowlmError(f"grace edits one layer; got layers {hp.layers}")
    return (hp.module or names.mlp_out).format(hp.layers[0])


def adaptor_for(model, hp, ctx: EditContext, guard) -> GraceAdaptor:
    """The run's adaptor, created (and registered for removal on restore) at the first edit."""
    adaptor = ctx.state.get("grace")
    if adaptor is None:
        name = module_name(model, hp)
        adaptor = GraceAdaptor(get_module(model, name), name, hp.eps, hp.eps_expand)
        ctx.state["grace"] = adaptor
        guard.on_restore(adaptor.remove)
    return adaptor


def apply_grace(model, tokenizer, requests: list[EditRequest], hp, ctx: EditContext, guard) -> None:
    import torch

    device = next(model.parameters()).device
    adaptor = adaptor_for(model, hp, ctx, guard)
    generator = torch.Generator().manual_seed(hp.seed + len(adaptor))
    params = list(model.parameters())
    saved = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        for request in requests:
            ids, start = encode_with_target(tokenizer, ctx.wrap(request.prompt), request.target_new)
            d_out = _output_size(model, adaptor.name)
            adaptor.position, adaptor.label = start - 1, tuple(ids[start:])
            adaptor.new_value = torch.rand(d_out, generator=generator).to(device)
            input_ids = torch.tensor([ids], device=device)
            target = torch.tensor(ids[start:], device=device)
            optimizer = None
            for _ in range(hp.n_iter):
                logits = model(input_ids=input_ids).logits[0, start - 1 : len(ids) - 1].float()
                loss = torch.nn.functional.cross_entropy(logits, target)
                if optimizer is None:  # the first forward created this edit's value
                    optimizer = torch.optim.Adam([adaptor.values], lr=hp.edit_lr)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            adaptor.position = adaptor.label = None
            adaptor.values = adaptor.values.detach().requires_grad_(True)
    finally:
        adaptor.position = adaptor.label = adaptor.new_value = None
        for p, flag in zip(params, saved):
            p.requires_grad_(flag)


def _output_size(model, name: str) -> int:
    module = get_module(model, name)  # nn.Linear has out_features, GPT-2's Conv1D has nf
    return int(getattr(module, "out_features", None) or getattr(module, "nf"))


def save_codebook(adaptor: GraceAdaptor, path: str | Path) -> None:
    import torch

    from knowlm.utils.atomic import atomic_write

    with atomic_write(Path(path), mode="wb") as handle:
        torch.save(adaptor.state_dict(), handle)


def attach_codebook(model, path: str | Path) -> GraceAdaptor:
    """Hook a saved codebook (``grace.pt`` next to an edited model) onto ``model``."""
    import torch

    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    adaptor = GraceAdaptor(get_module(model, state["module"]), state["module"], state["init_eps"], state["eps_expand"])
    device = next(model.parameters()).device
    adaptor.keys, adaptor.values, adaptor.eps = (state[k].to(device) for k in ("keys", "values", "eps"))
    adaptor.labels = [tuple(x) for x in state["labels"]]
    return adaptor
