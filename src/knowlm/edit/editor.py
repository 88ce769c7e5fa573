"""``edit()``: apply ROME / MEMIT / FT / IKE edits to a loaded model and measure them before and after.

Modes: ``single`` (each request on the original model, restored in between: EasyEdit's default),
``batch`` (all requests at once; MEMIT and FT optimise them jointly) and ``sequential`` (each edit
on top of the last, measured at the end). Unless ``keep`` is set the original weights are put back
exactly (bit for bit) before returning.
"""

from __future__ import annotations

import resource
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from knowlm.edit import metrics as M
from knowlm.edit.hparams import load_hparams
from knowlm.edit.layers import check_layers, names_for
from knowlm.edit.requests import EditRequest, make_requests
from knowlm.edit.tokens import encode_with_target
from knowlm.errors import KnowlmError

MODES = ("single", "batch", "sequential")


class WeightGuard:
    """Copies of every parameter an edit touches, taken before the first change."""

    def __init__(self) -> None:
        self.originals: dict[str, tuple[Any, Any]] = {}

    def remember(self, name: str, param) -> None:
        if name not in self.originals:
            self.originals[name] = (param, param.detach().clone())

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            for param, original in self.originals.values():
                param.copy_(original)
        self.originals.clear()

    @property
    def names(self) -> list[str]:
        return sorted(self.originals)


@dataclass
class EditResult:
    """What an edit did: metrics (JSON-ready), and the handles to undo it."""

    method: str
    mode: str
    hparams: Any
    requests: list[EditRequest]
    metrics: dict
    edited_weights: list[str]
    contexts: list[str] | None = None  # IKE: the prompt prefix per request
    kept: bool = False
    guard: WeightGuard = field(default_factory=WeightGuard, repr=False)

    def restore(self) -> None:
        """Put the original weights back (a no-op when they were already restored)."""
        self.guard.restore()
        self.kept = False


def _peak_memory() -> tuple[float, str]:
    import torch

    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return torch.cuda.max_memory_allocated() / 2**20, "cuda max allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process max RSS"


def answers(model, tokenizer, prompts: list[str], targets: list[str]) -> list[str]:
    """Greedy continuations about as long as the targets (to show before/after)."""
    from knowlm.infer import DecodingParams, Generator

    out = []
    gen = Generator(model, tokenizer, template="raw")
    for prompt, target in zip(prompts, targets):
        ids, start = encode_with_target(tokenizer, prompt, target)
        params = DecodingParams(max_new_tokens=len(ids) - start + 2)
        out.append(gen.generate([prompt], params)[0].text.strip())
    return out


def _applier(method: str) -> Callable:
    if method == "rome":
        from knowlm.edit.rome import apply_rome

        return apply_rome
    if method == "memit":
        from knowlm.edit.memit import apply_memit

        return apply_memit
    if method == "ft":
        from knowlm.edit.ft import apply_ft

        return apply_ft
    raise KnowlmError(f"unknown editing method {method!r}; choose rome, memit, ft or ike")


def edit(
    model,
    tokenizer,
    requests: Iterable[EditRequest | dict],
    method: str = "rome",
    hparams: Any = None,
    mode: str = "single",
    keep: bool = False,
    stats_corpus: str | Path | None = None,
    stats_dir: str | Path | None = None,
    embedding_model: str | Path | None = None,
    demos: Iterable[EditRequest | dict] | None = None,
    show_answers: bool = True,
    progress: Callable[[int, int], None] | None = None,
    **overrides: Any,
) -> EditResult:
    """Edit ``model`` in place and measure the edits.

    hparams: a preset name, a YAML path, a dict or None (preset chosen from the model's size);
    ``overrides`` replace single hyperparameters (``layers=[1]``). stats_corpus: an indexed dataset
    prefix or JSONL/text file for the key statistics (default: the bundled corpus), cached in
    ``stats_dir``. embedding_model: IKE's retriever (a local dir, "minilm", or None for TF-IDF);
    demos: extra requests IKE may draw demonstrations from. progress(done, total) is called per edit.
    """
    import torch

    requests = make_requests(requests)
    if mode not in MODES:
        raise KnowlmError(f"unknown edit mode {mode!r}; choose one of: {', '.join(MODES)}")
    if method == "ike" and embedding_model is not None:
        overrides["embedding_model"] = str(embedding_model)
    hp = load_hparams(method, hparams, model, **overrides)
    if keep and mode == "single" and len(requests) > 1:
        raise KnowlmError("mode 'single' restores the model between edits; use batch or sequential to keep several edits")

    stats = None
    if method in ("rome", "memit"):
        check_layers(model, hp.layers, method)
        if hp.mom2_adjustment:
            from knowlm.edit.stats import second_moment

            names = names_for(model)
            cache = {}
            for layer in hp.layers:  # from the unedited model, before anything changes
                name = names.mlp_out.format(layer)
                cache[name] = second_moment(model, tokenizer, name, stats_corpus, hp.mom2_n_samples,
                                            hp.mom2_max_length, stats_dir)
            stats = cache.__getitem__
    elif method == "ft":
        check_layers(model, hp.layers, method)

    retriever = pool = None
    if method == "ike":
        from knowlm.edit.ike import make_retriever

        retriever = make_retriever(hp.embedding_model)
        pool = make_requests(demos) + requests if demos else requests

    was_training = model.training
    model.eval()
    guard = WeightGuard()
    raw_pre = M.measure(model, tokenizer, requests)
    before = answers(model, tokenizer, [r.prompt for r in requests], [r.target_new for r in requests]) if show_answers else None

    contexts = [""] * len(requests)
    raw_post: list[dict | None] = [None] * len(requests)
    after: list[str | None] = [None] * len(requests)
    times: list[float] = []
    edited_names: set[str] = set()

    def apply(subset: list[int]) -> None:
        start = time.perf_counter()
        chosen = [requests[i] for i in subset]
        if method == "ike":
            from knowlm.edit.ike import build_contexts

            for i, ctx in zip(subset, build_contexts(chosen, pool, hp, retriever, tokenizer)):
                contexts[i] = ctx
        else:
            _applier(method)(model, tokenizer, chosen, hp, stats, guard)
            edited_names.update(guard.names)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / len(subset))

    def measure(subset: list[int]) -> None:
        chosen = [requests[i] for i in subset]
        for i, raw in zip(subset, M.measure(model, tokenizer, chosen, [contexts[i] for i in subset])):
            raw_post[i] = raw
        if show_answers:
            texts = answers(model, tokenizer, [contexts[i] + requests[i].prompt for i in subset],
                            [requests[i].target_new for i in subset])
            for i, text in zip(subset, texts):
                after[i] = text

    try:
        if mode == "single":
            for i in range(len(requests)):
                apply([i])
                measure([i])
                if not (keep and i == len(requests) - 1):
                    guard.restore()
                if progress:
                    progress(i + 1, len(requests))
        elif mode == "batch":
            apply(list(range(len(requests))))
            if progress:
                progress(len(requests), len(requests))
            measure(list(range(len(requests))))
        else:
            for i in range(len(requests)):
                apply([i])
                if progress:
                    progress(i + 1, len(requests))
            measure(list(range(len(requests))))
        edited = sorted(edited_names)
    except BaseException:
        guard.restore()
        raise
    finally:
        if was_training:
            model.train()

    per_request = []
    for i, request in enumerate(requests):
        pre = M.summarise(raw_pre[i])
        post = M.summarise(raw_post[i], raw_pre[i])
        entry = {"case_id": request.case_id, "prompt": request.prompt, "subject": request.subject,
                 "target_new": request.target_new, "pre": pre, "post": post}
        if show_answers:
            entry["answer_before"], entry["answer_after"] = before[i], after[i]
        per_request.append(entry)
    peak, peak_kind = _peak_memory()
    result_metrics = {
        "method": method,
        "mode": mode,
        "model": str(getattr(model.config, "_name_or_path", "")),
        "num_requests": len(requests),
        "pre": M.average([r["pre"] for r in per_request]),
        "post": M.average([r["post"] for r in per_request]),
        "time_per_edit_s": sum(times) / len(times) if times else 0.0,
        "peak_memory_mb": round(peak, 1),
        "peak_memory_kind": peak_kind,
        "edited_weights": edited,
        "hparams": asdict(hp),
        "requests": per_request,
    }
    kept = bool(keep)
    if not keep:
        guard.restore()
    result = EditResult(method, mode, hp, requests, result_metrics, edited, contexts if method == "ike" else None,
                        kept=kept, guard=guard)
    return result


def save_edited(result: EditResult, model, tokenizer, output: str | Path, base_model: str | None = None,
                arguments: dict | None = None) -> Path:
    """Write the (edited) model as a self-describing directory plus ``metrics.json``, atomically."""
    import json

    from knowlm.models import write_manifest
    from knowlm.utils.atomic import atomic_dir

    output = Path(output)
    with atomic_dir(output) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        if base_model and (Path(base_model) / "tokenizer.model").is_file():
            shutil.copy2(Path(base_model) / "tokenizer.model", tmp / "tokenizer.model")
        (tmp / "metrics.json").write_text(json.dumps(result.metrics, ensure_ascii=False, indent=2), encoding="utf-8")
        if result.contexts is not None:
            (tmp / "ike_contexts.json").write_text(json.dumps(
                [{"prompt": r.prompt, "context": c} for r, c in zip(result.requests, result.contexts)],
                ensure_ascii=False, indent=2), encoding="utf-8")
        write_manifest(tmp, produced_by="knowlm edit", arguments=arguments or {},
                       template=getattr(model, "knowlm_template", None), base_model=base_model,
                       edit={"method": result.method, "mode": result.mode, "num_requests": len(result.requests),
                             "edited_weights": result.edited_weights})
    return output
