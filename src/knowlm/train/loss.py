"""Token losses without full-vocabulary fp32 logits, and the objectives built on them.

A causal LM's output layer turns every position into ``vocab`` logits; upcasting all of them to
fp32 for the loss costs ``4 * tokens * vocab`` bytes (8 x 2048 x 32000 -> 2 GiB) and is
kept alive for backward. Instead, while a training forward runs, the output layer's forward is
replaced by :func:`chunked_nll`: it keeps only positions that have a label, and computes the
logits and cross-entropy a chunk of tokens at a time under activation checkpointing, so at most
one chunk of logits exists at once, in backward as in forward (torchtune and Liger do the same).
The layer is patched per instance, through the wrapper's normal forward, so DDP, FSDP2 and
DeepSpeed hooks, LoRA on the head and quantized heads all keep working. The model's output
``logits`` then holds the per-label-token negative log-likelihoods.

:mod:`knowlm.train.objectives` turns those into the loss of a batch.
"""

from __future__ import annotations

import torch

LABELS_ATTR = "_knowlm_labels"
CHUNK_BYTES = 2**27  # ~128 MiB of fp32 logits per chunk when the chunk size is automatic


def label_positions(labels: torch.Tensor) -> torch.Tensor:
    """Mask (B, T-1) of the positions whose next token is a label."""
    return labels[:, 1:] != -100


def auto_chunk(vocab: int) -> int:
    return max(16, min(8192, CHUNK_BYTES // (4 * max(vocab, 1))))


def chunked_nll(hidden: torch.Tensor, project, labels: torch.Tensor, chunk: int) -> torch.Tensor:
    """Next-token NLL (fp32, one value per label token, row-major) of ``project(hidden)``."""
    from torch.utils.checkpoint import checkpoint

    mask = label_positions(labels)
    selected = hidden[:, :-1][mask]
    targets = labels[:, 1:][mask]
    if selected.shape[0] == 0:  # an empty product keeps the head in the graph (DDP waits for its gradient)
        return project(selected).float().sum(-1)

    def piece(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = project(h).float()
        return torch.nn.functional.cross_entropy(logits, y, reduction="none")

    parts = []
    for start in range(0, selected.shape[0], chunk):
        h, y = selected[start:start + chunk], targets[start:start + chunk]
        parts.append(checkpoint(piece, h, y, use_reentrant=False) if torch.is_grad_enabled() else piece(h, y))
    return torch.cat(parts)


def full_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The same values from materialised logits (upcast as a whole: the unchunked path)."""
    mask = label_positions(labels)
    shift = logits[:, :-1].float()[mask]
    return torch.nn.functional.cross_entropy(shift, labels[:, 1:][mask], reduction="none")


def install_loss_head(model, chunk: int) -> bool:
    """Patch the output layer of ``model`` (unwrapped HF/PEFT model) to compute chunked NLL when labels are set.

    Returns False (and changes nothing) for models whose logits are post-processed after the
    head (Gemma-2's soft-capping): they keep the full-logits path.
    """
    config = getattr(model, "config", None)
    if chunk == 0 or getattr(config, "final_logit_softcapping", None) is not None:
        return False
    head = model.get_output_embeddings()
    if head is None:
        return False
    if chunk < 0:
        chunk = auto_chunk(getattr(config, "vocab_size", 32000))
    original = head.forward

    def forward(hidden, *args, **kwargs):
        labels = head.__dict__.get(LABELS_ATTR)
        if labels is None:
            return original(hidden, *args, **kwargs)
        return chunked_nll(hidden, original, labels, chunk)

    head.forward = forward
    head._knowlm_loss_head = True
    return True


class LossHead:
    """Hands the labels of one forward to the patched output layer (and takes them back)."""

    def __init__(self, model):
        self.head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        self.active = bool(self.head is not None and getattr(self.head, "_knowlm_loss_head", False))

    def nll(self, call, labels: torch.Tensor) -> torch.Tensor:
        """Run ``call()`` (the model's forward) with labels set; return per-label-token NLL."""
        if not self.active:
            return full_nll(call(), labels)
        self.head.__dict__[LABELS_ATTR] = labels
        try:
            return call()
        finally:
            self.head.__dict__.pop(LABELS_ATTR, None)
