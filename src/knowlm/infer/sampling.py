"""Choosing a row's next token, the one implementation both generators use.

The continuous-batching engine calls :func:`next_token` row by row; the batched
:class:`~knowlm.infer.engine.Generator` runs the same functions inside ``model.generate`` as a logits
processor (:class:`DecodeProcessor`). So a request decodes identically whichever path runs it, alone or
in a batch: every row samples from its own ``torch.Generator`` seeded by the request (a seeded request
reproduces exactly; different seeds differ), and penalties only ever look at the row's own tokens.

Order, as in vLLM: raw logits -> repetition penalty (prompt and answer tokens) -> presence and
frequency penalties (answer tokens) -> ``logit_bias`` -> EOS and stop token ids held back until
``min_new_tokens`` -> the request's logits processors (grammar masks) -> greedy argmax, or
temperature, top-k, top-p and a draw. Bad numerics end the row with :class:`RowError`, never the batch.
"""

from __future__ import annotations

import logging
from typing import Sequence

from knowlm.decoding import DecodingParams

log = logging.getLogger("knowlm.infer.batching")  # the engine's log: failures there are the engine's rows

BAD_NUMERICS = (
    "the decoding parameters of this request give no valid next-token distribution "
    "(non-finite scores or every token excluded); use a repetition_penalty nearer 1, smaller logit_bias or penalties"
)


class RowError(Exception):
    """One row cannot continue; ``message`` is safe to show its client, ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def row_generator(seed: int | None, device):
    """The row's own random generator: seeded by the request, else from torch's global generator."""
    import torch

    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    return torch.Generator(device=device).manual_seed(seed % 2**64)


def adjust(scores, params: DecodingParams, seen, n_generated: int, hold_back: Sequence[int]):
    """Penalties, bias and held-back stop tokens on ``scores`` ([1, V], modified in place when needed).

    ``seen`` ([1, T] token ids): the row's prompt followed by its ``n_generated`` answer tokens.
    """
    import torch

    if not params.adjusts_scores:
        return scores
    scores = scores.clone()
    if params.repetition_penalty != 1.0:
        index = seen[0].unique()
        picked = scores[0, index]
        scores[0, index] = torch.where(picked < 0, picked * params.repetition_penalty, picked / params.repetition_penalty)
    if (params.presence_penalty or params.frequency_penalty) and n_generated:
        ids, counts = seen[0, seen.shape[1] - n_generated :].unique(return_counts=True)
        scores[0, ids] -= params.frequency_penalty * counts.to(scores.dtype) + params.presence_penalty
    if params.logit_bias:
        ids = torch.tensor(list(params.logit_bias), dtype=torch.long, device=scores.device)
        scores[0, ids] += torch.tensor(list(params.logit_bias.values()), dtype=scores.dtype, device=scores.device)
    if n_generated < params.min_new_tokens and hold_back:
        scores[0, torch.tensor(list(hold_back), dtype=torch.long, device=scores.device)] = float("-inf")
    return scores


def choose(scores, params: DecodingParams, rng) -> int:
    """Greedy argmax, or temperature / top-k / top-p and a draw from ``rng`` (``scores``: [1, V])."""
    import torch

    if torch.isnan(scores).any() or torch.isposinf(scores).any() or not torch.isfinite(scores).any():
        raise RowError(BAD_NUMERICS)
    if not params.sampling:
        return int(scores.argmax(dim=-1).item())
    scores = scores / max(params.temperature, 1e-5)
    if params.top_k and params.top_k < scores.shape[-1]:
        kth = torch.topk(scores, params.top_k, dim=-1).values[..., -1, None]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
        probs = sorted_scores.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs > params.top_p  # keep the token that crosses top_p
        scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = scores.softmax(dim=-1)
    if not torch.isfinite(probs).all():
        raise RowError(BAD_NUMERICS)
    return int(torch.multinomial(probs, 1, generator=rng).item())


def next_token(scores, params: DecodingParams, seen, n_generated: int, hold_back: Sequence[int], processors, rng) -> int:
    """One row's next token: :func:`adjust`, the request's processors, :func:`choose`."""
    scores = adjust(scores, params, seen, n_generated, hold_back)
    for processor in processors or ():
        scores = processor(seen, scores)
    return choose(scores, params, rng)


def choose_tokens(logits, rows, eos_ids, failed_message: str) -> tuple[list[int], dict[int, RowError]]:
    """The continuous-batching engine's step: the next token of every row of ``logits`` ([rows, V]), each
    with its row's parameters, processors and generator, and the rows that cannot go on (index -> error;
    ``failed_message`` for an internal error, whose details go to the log). Rows are the engine's: they
    carry ``params``, ``handle``, ``prompt_ids``, ``generated``, ``hold_back``, ``rng`` and ``logprobs``."""
    import torch

    # Greedy choices and NaN flags (max propagates NaN) from one pass, in one device-to-host copy.
    best, tokens = logits.max(dim=-1)
    tokens, broken = torch.stack([tokens, best.isnan().long()]).tolist()
    failures: dict[int, RowError] = {}
    for i, row in enumerate(rows):
        p = row.params
        request = row.handle.request
        try:
            if p.sampling or p.adjusts_scores or request.processors:
                seen = torch.tensor([row.prompt_ids + row.generated], dtype=torch.long, device=logits.device)
                tokens[i] = next_token(logits[i : i + 1], p, seen, len(row.generated), row.hold_back, request.processors, row.rng)
            elif broken[i]:
                raise RowError("the model produced no valid scores for this request", 500)
            if request.logprobs is not None and not (tokens[i] in eos_ids and tokens[i] not in p.stop_token_ids):
                row.logprobs.append((tokens[i], *token_logprobs(logits[i], tokens[i], request.logprobs)))
        except RowError as exc:
            failures[i] = exc
        except Exception:  # a logits processor (e.g. a grammar) raised: this request only
            log.exception("choosing the next token of %s failed", row.handle.request_id)
            failures[i] = RowError(failed_message, 500)
    return tokens, failures


def token_logprobs(raw_scores, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
    """The model's log-probability of ``token`` and its ``top`` most likely alternatives (raw logits,
    before penalties and sampling, like vLLM's default ``raw_logprobs``)."""
    import torch

    logprobs = torch.log_softmax(raw_scores.float(), dim=-1)
    chosen = float(logprobs[token])
    if top <= 0:
        return chosen, []
    values, ids = torch.topk(logprobs, min(top, logprobs.shape[-1]))
    return chosen, list(zip(ids.tolist(), values.tolist()))


def hold_back_ids(eos_ids: Sequence[int], params: DecodingParams) -> list[int]:
    """Tokens ``min_new_tokens`` keeps out: EOS and the request's stop token ids."""
    return sorted(set(eos_ids) | set(params.stop_token_ids))


def decode_processor(params: DecodingParams, starts: Sequence[int], width: int, hold_back: Sequence[int], device, pick: bool, beams: int = 1):
    """A transformers logits processor running :func:`adjust` (and, with ``pick``, :func:`choose`) per row.

    ``starts[i]``: where prompt ``i``'s real tokens begin in its left-padded row (padding never counts as
    seen); ``width``: the padded prompt width. With ``pick`` the chosen token is the only one left (score
    0, the rest -inf), so ``model.generate``'s greedy step takes exactly the token sampled here from the
    prompt's own generator. ``beams``: rows per prompt (beam search adjusts scores, never picks).
    """
    from transformers import LogitsProcessor

    class DecodeProcessor(LogitsProcessor):
        def __init__(self):
            self.rngs = [row_generator(params.seed, device) for _ in starts] if pick else []

        def __call__(self, input_ids, scores):
            n_generated = input_ids.shape[1] - width
            out = scores.new_full(scores.shape, float("-inf")) if pick else scores.clone()
            for i in range(scores.shape[0]):
                prompt = i // beams
                seen = input_ids[i : i + 1, starts[prompt] :]
                row = adjust(scores[i : i + 1], params, seen, n_generated, hold_back)
                if pick:
                    out[i, choose(row, params, self.rngs[prompt])] = 0.0
                else:
                    out[i] = row[0]
            return out

    return DecodeProcessor()


def generation_setup(params: DecodingParams, starts: Sequence[int], width: int, eos_ids: Sequence[int], pad_id: int, device,
                     max_new_tokens: int | None = None):
    """``(GenerationConfig, processors)`` that make ``model.generate`` decode ``params`` like the engine.

    Greedy rows without adjustments use generate's own argmax; anything else picks through
    :func:`decode_processor` (per-row generators). Beam search keeps transformers' beams, with the
    same score adjustments. Generation stops at EOS and at ``stop_token_ids``.
    """
    from transformers import GenerationConfig

    hold = hold_back_ids(eos_ids, params)
    processors = []
    beams = params.num_beams > 1
    if beams and params.adjusts_scores:
        processors.append(decode_processor(params, starts, width, hold, device, pick=False, beams=params.num_beams))
    elif not beams and (params.sampling or params.adjusts_scores):
        processors.append(decode_processor(params, starts, width, hold, device, pick=True))
    beam_sampling = beams and params.sampling
    config = GenerationConfig(
        max_new_tokens=max_new_tokens or params.max_new_tokens,
        num_beams=params.num_beams,
        do_sample=beam_sampling,
        temperature=params.temperature if beam_sampling else None,
        top_p=params.top_p if beam_sampling else None,
        top_k=params.top_k if beam_sampling else None,
        eos_token_id=hold or None,
        pad_token_id=pad_id,
    )
    return config, processors


def answer_tokens(row: Sequence[int], eos_ids: Sequence[int], params: DecodingParams) -> tuple[list[int], bool]:
    """The answer part of ``model.generate``'s new tokens: up to EOS (dropped) or a stop token id (kept);
    ``True`` when one of them ended it."""
    stop_ids = set(params.stop_token_ids)
    eos = set(eos_ids)
    for j, token in enumerate(row):
        if token in stop_ids:
            return list(row[: j + 1]), True
        if token in eos:
            return list(row[:j]), True
    return list(row), False
