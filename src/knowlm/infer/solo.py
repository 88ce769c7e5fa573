"""Work that cannot share the running batch (beam search): on its own threads, beside the batch.

Beam search multiplies one request into ``num_beams`` rows that must be reordered every step, so it
runs through ``model.generate`` rather than the batching loop. Running it *in* the loop made every
other client wait for the whole search; here it runs on worker threads while the loop keeps
decoding, at most ``workers`` searches at a time with ``max_waiting`` queued (429 beyond), and a
client that leaves stops its search at the next step.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Callable

from knowlm.infer.backends import Event, GenerationRequest, QueueFullError, RequestHandle

log = logging.getLogger("knowlm.infer.batching")

Job = tuple[GenerationRequest, RequestHandle, list[int]]


class SoloRunner:
    """A bounded queue of jobs and the worker threads that run them with ``run(request, handle, ids)``."""

    def __init__(self, run: Callable[[GenerationRequest, RequestHandle, list[int]], None], workers: int = 1,
                 max_waiting: int = 16, num_threads: int | None = None):
        self._run = run
        self.workers = max(1, workers)
        self.max_waiting = max_waiting
        self.num_threads = num_threads
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._current: set[RequestHandle] = set()

    @property
    def running(self) -> int:
        return len(self._current)

    def submit(self, request: GenerationRequest, handle: RequestHandle, ids: list[int]) -> None:
        with self._cond:
            if len(self._jobs) >= self.max_waiting:
                raise QueueFullError(f"too many queued beam-search requests ({len(self._jobs)}); retry later")
            self._jobs.append((request, handle, ids))
            if len(self._threads) < self.workers:
                thread = threading.Thread(target=self._work, name=f"knowlm-solo-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
            self._cond.notify()

    @property
    def waiting(self) -> int:
        return len(self._jobs)

    def busy(self) -> bool:
        return bool(self._jobs or self.running)

    def _work(self) -> None:
        import torch

        torch.set_grad_enabled(False)
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        while True:
            with self._cond:
                while not self._jobs and not self._stopping:
                    self._cond.wait(timeout=0.5)
                if self._stopping:
                    return
                request, handle, ids = self._jobs.popleft()
                self._current.add(handle)
            try:
                self._run(request, handle, ids)
            except Exception:  # this request fails; the server and the batch go on
                log.exception("solo request %s failed", request.request_id)
                handle.push(Event(error="generation failed for this request", status=500, prompt_tokens=len(ids)))
            finally:
                with self._cond:
                    self._current.discard(handle)

    def stop(self, message: str) -> None:
        """Fail queued jobs, cancel running ones, and let the workers end."""
        with self._cond:
            self._stopping = True
            jobs, self._jobs = list(self._jobs), deque()
            for handle in self._current:
                handle.cancel()  # a search stops at its next step
            self._cond.notify_all()
        for _, handle, ids in jobs:
            handle.push(Event(error=message, status=503, prompt_tokens=len(ids)))
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads = []


def run_beam(engine, request: GenerationRequest, handle: RequestHandle, ids: list[int]) -> None:
    """Beam search (on a solo worker thread): one ``model.generate``, stopped early if the client leaves."""
    import torch
    from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

    from knowlm.infer.engine import cut_at_stop
    from knowlm.infer.sampling import answer_tokens, generation_setup

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), handle.cancelled.is_set(), dtype=torch.bool, device=input_ids.device)

    p = request.params
    device = engine.device()
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    config, own = generation_setup(p, [0], len(ids), sorted(engine.eos_ids), engine.pad_id, device, max_new_tokens=min(p.max_new_tokens, engine.max_context - len(ids)))
    model = engine.model.get_base_model() if engine.router is not None else engine.model  # LoRA layers route by thread
    if not handle.cancelled.is_set():
        with engine.adapter_rows(request.adapter), torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config,
                                 logits_processor=LogitsProcessorList(own), stopping_criteria=StoppingCriteriaList([Cancelled()]))
    if handle.cancelled.is_set():
        handle.push(Event(finished=True, finish_reason="cancelled", prompt_tokens=len(ids)))
        engine.cancelled_requests += 1
        return
    row, ended = answer_tokens(out[0, len(ids) :].tolist(), sorted(engine.eos_ids), p)
    text, hit_stop = cut_at_stop(engine.decode(row), p.stop)
    engine.generated_tokens += len(row)
    handle.push(Event(text=text, num_tokens=len(row), finished=True, finish_reason="stop" if ended or hit_stop else "length", prompt_tokens=len(ids)))
    engine.finished_requests += 1
