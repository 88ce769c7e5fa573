"""The extraction pipeline: texts x schema batches -> batched generation -> parsed, merged records.

One prompt per (text chunk, schema batch); all prompts of a run go through the generator
together, so a batch of 16 costs about what one prompt did in KnowLM's one-at-a-time loop.
Texts longer than the context window are cut at sentence boundaries into chunks whose spans are
shifted back to offsets in the full text, never silently truncated. Every output record says
whether all its prompts parsed (``parse_status`` ``ok`` / ``partial`` / ``failed``).

Torch-free: the generator (any :class:`knowlm.infer.TextGenerator`) does the model work and says
how the model is prompted and where its answers stop; nothing here imports ``knowlm.infer``,
``knowlm.models`` or torch (``knowlm.ie.constrained`` does, only when constrained decoding is asked for).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Sequence

from knowlm.data.sentences import split_sentences
from knowlm.decoding import DecodingParams, preset
from knowlm.errors import KnowlmError
from knowlm.ie.parsing import TASK_FIELD, parse_output
from knowlm.ie.prompts import build_prompt, check_style
from knowlm.ie.records import dedup, detect_lang, entity_key, event_key, new_record, relation_key
from knowlm.ie.schema import DEFAULT_SPLIT_NUM, batch_schema, make_schema

if TYPE_CHECKING:  # the protocol lives on the model side; only its shape is needed here
    from knowlm.infer.generator import TextGenerator


def _count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def chunk_text(text: str, budget: int, count, lang: str = "auto") -> list[tuple[int, str]]:
    """``(offset, chunk)`` pieces of ``text`` of at most ``budget`` tokens each, cut at sentence ends
    (``knowlm.data.split_sentences``; a sentence longer than the budget is cut by characters).

    Chunks carry no surrounding whitespace: a model tuned on trimmed inputs that is shown
    ``Bern. "}`` instead of ``Bern."}`` at the end of its prompt loses the start of its answer."""
    if count(text) <= budget:
        return _trimmed([(0, text)])
    pieces: list[str] = []
    for sentence in split_sentences(text, lang):
        if count(sentence) <= budget:
            pieces.append(sentence)
            continue
        start = 0
        while start < len(sentence):  # hard cut: shrink the window until it fits
            size = max(1, min(len(sentence) - start, budget * 4))
            while size > 1 and count(sentence[start : start + size]) > budget:
                size = max(1, size * 3 // 4)
            pieces.append(sentence[start : start + size])
            start += size
    chunks: list[tuple[int, str]] = []
    offset, current, current_start = 0, "", 0
    for piece in pieces:
        if current and count(current + piece) > budget:
            chunks.append((current_start, current))
            current, current_start = "", offset
        current += piece
        offset += len(piece)
    if current:
        chunks.append((current_start, current))
    return _trimmed(chunks)


def _trimmed(chunks: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Chunks without surrounding whitespace (offsets moved to match); blank ones dropped."""
    return [(start + len(chunk) - len(chunk.lstrip()), chunk.strip()) for start, chunk in chunks if chunk.strip()]


def _normalise_inputs(texts: Sequence[Any]) -> list[dict]:
    docs = []
    for index, item in enumerate(texts):
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise KnowlmError(f"input {index}: expected a string or an object with a string 'text'")
        doc = dict(item)
        doc["id"] = str(doc["id"]) if doc.get("id") is not None else str(index)
        docs.append(doc)
    return docs


def _context_budget(context: int, overhead: int, max_new_tokens: int, max_input_tokens: int | None) -> int:
    if max_input_tokens is not None:
        if max_input_tokens < 1:
            raise KnowlmError("max_input_tokens must be >= 1")
        return max_input_tokens
    budget = int(context) - max_new_tokens - overhead
    if budget < 16:
        raise KnowlmError(
            f"the model's context ({context} tokens) leaves no room for text after the prompt ({overhead} tokens) "
            f"and max_new_tokens={max_new_tokens}; lower max_new_tokens or the schema split"
        )
    return budget


class _TextBar:
    """Extraction progress in texts (a text is done when all its chunk x schema-batch prompts are), with the
    tokens generated and an ETA; off when stderr is not a terminal."""

    def __init__(self, n_texts: int, doc_of_prompt: list[int]):
        from tqdm import tqdm

        self.doc_of_prompt = doc_of_prompt
        self.left = Counter(doc_of_prompt)
        self.tokens = 0
        self.done = n_texts - len(self.left)  # texts with no prompt (none today) count as done
        self.bar = tqdm(total=n_texts, initial=self.done, desc="extracting", unit="text", disable=None)

    def __call__(self, indices, generations) -> None:
        done = 0
        for index in indices:
            doc = self.doc_of_prompt[index]
            self.left[doc] -= 1
            done += self.left[doc] == 0
        self.tokens += sum(g.num_tokens for g in generations)
        self.done += done
        self.bar.set_postfix(tokens=self.tokens, refresh=False)
        self.bar.update(done)

    def close(self) -> None:
        self.bar.close()


def extract_texts(
    generator: TextGenerator,
    texts: Sequence[str] | Sequence[dict],
    task: str,
    schema: Any,
    lang: str = "auto",
    style: str = "json",
    wording: str | None = None,
    split_num: int | None = None,
    constrained: bool = False,
    params: DecodingParams | None = None,
    batch_size: int = 16,
    max_input_tokens: int | None = None,
    progress: bool = False,
    drop_hallucinated: bool = True,
    bounds=None,
    stats: dict | None = None,
    ground: bool = False,
) -> list[dict]:
    """IE records v1, one per input text, each with ``parse_status`` and notes.

    ``texts``: strings or ``{"text", "id"?, "lang"?, "source"?}``. ``params``: decoding (default: the
    ``ie`` preset); the generator's stop strings are added unless decoding is constrained. ``stats``
    (optional dict) is filled with counts and timings for summaries and benchmarks. ``wording``: the
    prompt wording (``full`` / ``compact``); by default the one the generator's model was tuned on.
    ``ground`` (constrained decoding, opt-in): span values can only be spans of the input text
    (:mod:`knowlm.ie.grounding`), checked against the whole text, not only the chunk. It helps a
    model that half remembers names; on the demo's tuned model it costs F1 (a span the model did
    not find gets forced onto the text: relation F1 0.357 -> 0.243 on the held-out documents, precision halved).
    """
    from knowlm.ie.prompts import check_wording

    schema = make_schema(task, schema)
    task = schema.task
    style = check_style(style)
    wording = check_wording(wording or getattr(generator, "ie_wording", None) or "full")
    if constrained and style != "json":
        raise KnowlmError("--constrained works with the json prompt style only")
    if batch_size < 1:
        raise KnowlmError("batch_size must be >= 1")
    docs = _normalise_inputs(texts)
    params = params if params is not None else preset("ie")
    if not constrained:  # stop where the template would start a new turn
        extra = [s for s in generator.stop if s not in params.stop]
        if extra:
            params = params.updated(stop=list(params.stop) + extra)
    split = DEFAULT_SPLIT_NUM[task] if split_num is None else split_num
    batches = [schema.subset(b) for b in batch_schema(schema.items, split)]
    tokenizer = generator.tokenizer

    # Budget for the text: context minus the longest prompt without text minus the answer.
    overhead = max(
        _count(tokenizer, generator.prompt(*build_prompt(task, "", b, style=style, lang=lng, wording=wording))) for b in batches for lng in ("zh", "en")
    )
    budget = _context_budget(generator.max_context, overhead, params.max_new_tokens, max_input_tokens)

    prompts: list[str] = []
    meta: list[tuple[int, int, str, Any]] = []  # (doc index, chunk offset, chunk text, schema batch)
    n_chunks = [0] * len(docs)
    for d, doc in enumerate(docs):
        doc_lang = lang if lang in ("zh", "en") else doc.get("lang") if doc.get("lang") in ("zh", "en") else detect_lang(doc["text"])
        doc["lang"] = doc_lang
        chunks = chunk_text(doc["text"], budget, lambda s: _count(tokenizer, s), doc_lang) if doc["text"] else [(0, "")]
        n_chunks[d] = len(chunks)
        for offset, chunk in chunks:
            for sub in batches:
                instruction, input_text = build_prompt(task, chunk, sub, style=style, lang=doc_lang, wording=wording)
                prompts.append(generator.prompt(instruction, input_text))
                meta.append((d, offset, chunk, sub))

    factory = None
    if constrained:
        from knowlm.ie.constrained import Bounds, processor_factory

        row_texts = [docs[m[0]]["text"] for m in meta] if ground else None
        factory = processor_factory(generator, task, [m[3] for m in meta], bounds or Bounds(), row_texts=row_texts)
    started = time.perf_counter()
    report = _TextBar(len(docs), [m[0] for m in meta]) if progress and prompts else None
    try:
        gens = generator.generate(prompts, params, batch_size=batch_size, logits_processor=factory, progress=report or False) if prompts else []
    finally:
        if report is not None:
            report.close()
    seconds = time.perf_counter() - started

    field = TASK_FIELD[task]
    items: list[list[dict]] = [[] for _ in docs]
    errors: list[list[str]] = [[] for _ in docs]
    notes: list[list[str]] = [[] for _ in docs]
    for (d, offset, chunk, sub), gen in zip(meta, gens):
        parsed = parse_output(gen.text, task, sub, style=style, text=docs[d]["text"], drop_hallucinated=drop_hallucinated)
        notes[d].extend(parsed.get("parse_notes", []))
        if parsed.get("parse_error"):
            reason = parsed["parse_error"]
            if gen.finish_reason == "length" and reason in ("no_json", "no_tuples", "bad_values"):
                reason = "truncated"
            errors[d].append(reason)
            continue
        if gen.finish_reason == "length":
            notes[d].append("hit_max_new_tokens")
        for item in parsed[field]:
            if "start" in item:  # offsets point at the chunk's own mention when it has one
                inside = chunk.find(item["text"])
                if inside >= 0:
                    item["start"], item["end"] = offset + inside, offset + inside + len(item["text"])
            items[d].append(item)

    key = {"entities": entity_key, "relations": relation_key, "events": event_key}[field]
    per_doc = len(batches)
    records = []
    for d, doc in enumerate(docs):
        record = new_record(doc["text"], id=doc["id"], lang=doc["lang"], source=doc.get("source"))
        record[field] = dedup(items[d], key)
        if task not in ("ner", "re", "ee"):  # the scorer restricts EET/EEA/SPO records to their measures
            record["task"] = task
        n_prompts = n_chunks[d] * per_doc
        failed = len(errors[d])
        record["parse_status"] = "ok" if not failed else "failed" if failed == n_prompts else "partial"
        if failed:
            record["parse_errors"] = errors[d]
        if failed == n_prompts and failed:
            record["parse_error"] = errors[d][0]
        if notes[d]:
            record["parse_notes"] = sorted(set(notes[d]))
        if n_chunks[d] > 1:
            record["chunks"] = n_chunks[d]
        records.append(record)
    if stats is not None:
        stats.update(
            texts=len(docs),
            prompts=len(prompts),
            chunked_texts=sum(1 for n in n_chunks if n > 1),
            generated_tokens=sum(g.num_tokens for g in gens),
            hit_length=sum(1 for g in gens if g.finish_reason == "length"),
            generate_seconds=seconds,
            parse_failures=sum(len(e) for e in errors),
            failed_records=sum(1 for r in records if r["parse_status"] == "failed"),
        )
    return records
