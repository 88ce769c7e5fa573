"""``edit()``: apply ROME / MEMIT / AlphaEdit / FT / GRACE / IKE edits to a loaded model and measure
them before and after.

Modes: ``single`` (each request, or each group of requests such as an MQuAKE case, on the
original model, restored in between: EasyEdit's default), ``batch`` (all requests at once; MEMIT,
AlphaEdit and FT optimise them jointly) and ``sequential`` (lifelong editing: each edit on top of
the last; with ``eval_every=k`` the edits so far are measured after every k edits, giving a curve).
Unless ``keep`` is set the original weights are put back exactly (bit for bit) before returning.
"""

from __future__ import annotations

import importlib
import resource
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from knowlm.edit import metrics as M
from knowlm.edit.common import EditContext
from knowlm.edit.hparams import load_hparams
from knowlm.edit.layers import check_layers, names_for
from knowlm.edit.requests import EditRequest, make_requests
from knowlm.edit.tokens import encode_with_target
from knowlm.errors import KnowlmError

MODES = ("single", "batch", "sequential")
APPLIERS = {"rome": "knowlm.edit.rome:apply_rome", "memit": "knowlm.edit.memit:apply_memit",
            "alphaedit": "knowlm.edit.alphaedit:apply_alphaedit", "ft": "knowlm.edit.ft:apply_ft",
            "grace": "knowlm.edit.grace:apply_grace"}
STATS_METHODS = ("rome", "memit", "alphaedit")


class WeightGuard:
    """Copies of every parameter an edit touches, taken before the first change, and the undo
    actions of edits that add to the model instead (GRACE's hook)."""

    def __init__(self) -> None:
        self.originals: dict[str, tuple[Any, Any]] = {}
        self.undo: list[Callable[[], None]] = []

    def remember(self, name: str, param) -> None:
        if name not in self.originals:
            self.originals[name] = (param, param.detach().clone())

    def on_restore(self, action: Callable[[], None]) -> None:
        self.undo.append(action)

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            for param, original in self.originals.values():
                param.copy_(original)
        self.originals.clear()
        for action in reversed(self.undo):
            action()
        self.undo.clear()

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
    context: EditContext | None = field(default=None, repr=False)

    def restore(self) -> None:
        """Put the original weights back (a no-op when they were already restored)."""
        self.guard.restore()
        if self.context is not None:
            self.context.state.clear()
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
    if method not in APPLIERS:
        raise KnowlmError(f"unknown editing method {method!r}; choose one of: {', '.join([*APPLIERS, 'ike'])}")
    module, name = APPLIERS[method].split(":")
    return getattr(importlib.import_module(module), name)


def make_wrap(template: str | None) -> Callable[[str], str]:
    """Prompt -> what an instruction model is asked (the template registry's rendering), or the prompt itself."""
    if not template or template == "raw":
        return lambda text: text
    from knowlm.models.templates import get

    chosen = get(template)
    return lambda text: chosen.render(text)


def units_for(requests: list[EditRequest], mode: str) -> list[list[int]]:
    """Indices edited together: everything (batch), or one request/group at a time."""
    if mode == "batch":
        return [list(range(len(requests)))]
    units: list[list[int]] = []
    where: dict[str, int] = {}
    for i, r in enumerate(requests):
        if r.group is not None and r.group in where:
            units[where[r.group]].append(i)
        else:
            if r.group is not None:
                where[r.group] = len(units)
            units.append([i])
    return units


def statistics(model, tokenizer, method: str, hp, stats_corpus, stats_dir) -> tuple[Callable | None, dict]:
    """Key statistics of every edited layer, from the unedited model (before anything changes)."""
    if method not in STATS_METHODS or not (hp.mom2_adjustment or method == "alphaedit"):
        return None, {}
    from knowlm.edit.stats import layer_statistics

    names = names_for(model)
    cache, info = {}, {}
    for layer in hp.layers:
        name = names.mlp_out.format(layer)
        st = layer_statistics(model, tokenizer, name, stats_corpus, hp.mom2_n_samples, hp.mom2_max_length, stats_dir)
        cache[name] = st.mom2
        info[name] = {"samples": st.samples, "requested_samples": st.requested, "tokens": st.tokens}
    return cache.__getitem__, info


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
    template: str | None = None,
    eval_every: int = 0,
    fluency: bool = False,
    prefix_templates: list[list[str]] | None = None,
    **overrides: Any,
) -> EditResult:
    """Edit ``model`` in place and measure the edits.

    hparams: a preset name, a YAML path (knowlm or EasyEdit), a dict or None (preset chosen from the
    model's size); ``overrides`` replace single hyperparameters (``layers=[1]``). stats_corpus: an
    indexed dataset prefix or JSONL/text file for the key statistics (default: the bundled corpus),
    cached in ``stats_dir``. embedding_model: IKE's retriever (a local dir, "minilm", or None for
    TF-IDF); demos: extra requests IKE may draw demonstrations from. template: a prompt template
    name (``alpaca``, ``llama2``, ``chatml``) to edit and measure an instruction model through it.
    eval_every: in mode sequential, also measure the edits so far after every that many edits.
    fluency: also sample text after each edit prompt and report its n-gram entropy (KnowEdit's
    Fluency). prefix_templates: fixed prefix groups (``[["{}"], ["A. {}", ...]]``) instead of sampled
    ones. progress(done, total) is called per edit.
    """
    import torch

    requests = make_requests(requests)
    if mode not in MODES:
        raise KnowlmError(f"unknown edit mode {mode!r}; choose one of: {', '.join(MODES)}")
    if method == "ike" and embedding_model is not None:
        overrides["embedding_model"] = str(embedding_model)
    hp = load_hparams(method, hparams, model, **overrides)
    units = units_for(requests, mode)
    if keep and mode == "single" and len(units) > 1:
        raise KnowlmError("mode 'single' restores the model between edits; use batch or sequential to keep several edits")
    if eval_every < 0:
        raise KnowlmError("eval_every must be 0 (only at the end) or a positive number of edits")
    if method not in ("ike",):
        check_layers(model, hp.layers, method)
    stats, stats_info = statistics(model, tokenizer, method, hp, stats_corpus, stats_dir)
    wrap = make_wrap(template)
    ctx = EditContext(stats=stats, templates=prefix_templates, wrap=wrap)
    generate = method == "grace"

    retriever = pool = None
    if method == "ike":
        from knowlm.edit.ike import make_retriever

        retriever = make_retriever(hp.embedding_model)
        pool = make_requests(demos) + requests if demos else requests

    was_training = model.training
    model.eval()
    guard = WeightGuard()
    raw_pre = M.measure(model, tokenizer, requests, wrap=wrap, generate=generate)
    if fluency:
        from knowlm.edit.fluency import fluency as measure_fluency

        for raw, value in zip(raw_pre, measure_fluency(model, tokenizer, [wrap(r.prompt) for r in requests])):
            raw["fluency"] = value
    before = answers(model, tokenizer, [wrap(r.prompt) for r in requests], [r.target_new for r in requests]) if show_answers else None

    contexts = [""] * len(requests)
    raw_post: list[dict | None] = [None] * len(requests)
    after: list[str | None] = [None] * len(requests)
    times: list[float] = []
    edited_names: set[str] = set()
    curve: list[dict] = []

    def apply(subset: list[int]) -> None:
        start = time.perf_counter()
        chosen = [requests[i] for i in subset]
        if method == "ike":
            from knowlm.edit.ike import build_contexts

            for i, c in zip(subset, build_contexts(chosen, pool, hp, retriever, tokenizer)):
                contexts[i] = c
        else:
            _applier(method)(model, tokenizer, chosen, hp, ctx, guard)
            edited_names.update(guard.names)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / len(subset))

    def measure(subset: list[int]) -> None:
        chosen = [requests[i] for i in subset]
        for i, raw in zip(subset, M.measure(model, tokenizer, chosen, [contexts[i] for i in subset], wrap, generate)):
            raw_post[i] = raw
        if fluency:
            from knowlm.edit.fluency import fluency as measure_fluency

            for i, value in zip(subset, measure_fluency(model, tokenizer, [wrap(contexts[i] + requests[i].prompt) for i in subset])):
                raw_post[i]["fluency"] = value
        if show_answers:
            texts = answers(model, tokenizer, [wrap(contexts[i] + requests[i].prompt) for i in subset],
                            [requests[i].target_new for i in subset])
            for i, text in zip(subset, texts):
                after[i] = text

    def checkpoint(done: list[int], edits: int) -> None:
        chosen = [requests[i] for i in done]
        raws = M.measure(model, tokenizer, chosen, [contexts[i] for i in done], wrap, generate)
        point = M.average([M.summarise(raw, raw_pre[i]) for i, raw in zip(done, raws)])
        curve.append({"edits": edits, **{k: point[k] for k in ("reliability", "generalisation", "locality", "portability")}})

    try:
        if mode == "sequential":
            done: list[int] = []
            for n, unit in enumerate(units, 1):
                apply(unit)
                done += unit
                if progress:
                    progress(len(done), len(requests))
                if eval_every and n % eval_every == 0 and n < len(units):
                    checkpoint(done, n)
            measure(done)
        else:
            for n, unit in enumerate(units, 1):
                apply(unit)
                measure(unit)
                if mode == "single" and not (keep and n == len(units)):
                    guard.restore()
                    ctx.state.clear()
                if progress:
                    progress(sum(len(u) for u in units[:n]), len(requests))
        edited = sorted(edited_names)
    except BaseException:
        guard.restore()
        raise
    finally:
        if was_training:
            model.train()

    per_request = []
    for i, request in enumerate(requests):
        entry = {"case_id": request.case_id, "prompt": request.prompt, "subject": request.subject,
                 "target_new": request.target_new, "pre": M.summarise(raw_pre[i]), "post": M.summarise(raw_post[i], raw_pre[i])}
        if show_answers:
            entry["answer_before"], entry["answer_after"] = before[i], after[i]
        per_request.append(entry)
    post = M.average([r["post"] for r in per_request])
    if mode == "sequential":
        curve.append({"edits": len(units), **{k: post[k] for k in ("reliability", "generalisation", "locality", "portability")}})
    peak, peak_kind = _peak_memory()
    result_metrics = {
        "method": method,
        "mode": mode,
        "model": str(getattr(model.config, "_name_or_path", "")),
        "template": template or "raw",
        "num_requests": len(requests),
        "num_edits": len(units),
        "pre": M.average([r["pre"] for r in per_request]),
        "post": post,
        "knowedit": M.knowedit_summary(post),
        "time_per_edit_s": sum(times) / len(times) if times else 0.0,
        "peak_memory_mb": round(peak, 1),
        "peak_memory_kind": peak_kind,
        "edited_weights": edited,
        "statistics": stats_info,
        "hparams": asdict(hp),
        "requests": per_request,
    }
    if curve:
        result_metrics["curve"] = curve
    if method == "grace" and ctx.state.get("grace") is not None:
        result_metrics["grace"] = {"module": ctx.state["grace"].name, "codebook_size": len(ctx.state["grace"])}
    kept = bool(keep)
    if not keep:
        guard.restore()
        ctx.state.clear()
    return EditResult(method, mode, hp, requests, result_metrics, edited, contexts if method == "ike" else None,
                      kept=kept, guard=guard, context=ctx)


EDIT_FILES = ("metrics.json", "ike_contexts.json", "grace.pt", "edit_curve.png")  # beside the model in --output


def save_edited(result: EditResult, model, tokenizer, output: str | Path, base_model: str | None = None,
                arguments: dict | None = None) -> Path:
    """Write the (edited) model as a self-describing directory plus ``metrics.json`` (and GRACE's
    ``grace.pt`` codebook, the sequential curve ``edit_curve.png``), atomically."""
    import json

    from knowlm.models import write_manifest
    from knowlm.utils.outputs import MODEL_FILES, save_model_dir

    output = Path(output)
    with save_model_dir(output, owned=(*MODEL_FILES, *EDIT_FILES)) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        if base_model and (Path(base_model) / "tokenizer.model").is_file():
            shutil.copy2(Path(base_model) / "tokenizer.model", tmp / "tokenizer.model")
        (tmp / "metrics.json").write_text(json.dumps(result.metrics, ensure_ascii=False, indent=2), encoding="utf-8")
        if result.contexts is not None:
            (tmp / "ike_contexts.json").write_text(json.dumps(
                [{"prompt": r.prompt, "context": c} for r, c in zip(result.requests, result.contexts)],
                ensure_ascii=False, indent=2), encoding="utf-8")
        adaptor = result.context.state.get("grace") if result.context is not None else None
        if adaptor is not None:
            from knowlm.edit.grace import save_codebook

            save_codebook(adaptor, tmp / "grace.pt")
        if result.metrics.get("curve"):
            from knowlm.edit.curves import plot_curve

            plot_curve(result.metrics, tmp / "edit_curve.png")
        write_manifest(tmp, produced_by="knowlm edit", arguments=arguments or {},
                       template=getattr(model, "knowlm_template", None), base_model=base_model,
                       edit={"method": result.method, "mode": result.mode, "num_requests": len(result.requests),
                             "edited_weights": result.edited_weights,
                             "codebook": "grace.pt" if adaptor is not None else None})
    return output
