"""Instruction back-translation (Li et al. 2023): unlabelled texts become answers, and the model
writes the instruction each one answers. Texts are processed in batches; a batch is the unit of
resumption, keyed by the ids of its texts."""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from knowlm.data.sentences import detect_lang
from knowlm.instruct.llm import LLM, LLMParams
from knowlm.instruct.records import iter_texts
from knowlm.instruct.resume import PartialLog
from knowlm.instruct.text import tokenize

PROMPTS = {
    "en": ("Below is a text. Write the instruction or question from a user to which this text would be a "
           "good answer. Reply with the instruction only.\n\nText:\n{text}\n\nInstruction:"),
    "zh": "下面是一段文本。请写出一条用户指令或问题，使这段文本恰好是对它的好回答。只回复这条指令。\n\n文本：\n{text}\n\n指令：",
}
_LABEL = re.compile(r"^\s*(?:instruction|question|user|指令|问题|用户)\s*[:：]\s*", re.IGNORECASE)


@dataclass
class BacktranslationConfig:
    batch_size: int = 16  # texts per unit of work (and per request batch)
    min_tokens: int = 8  # texts shorter than this make poor answers: skipped
    max_chars: int = 4000  # longer texts are skipped (they would not fit a small model's context)
    max_instruction_tokens: int = 128
    json_key: str = "text"
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 128
    seed: int = 0


def parse_instruction(answer: str, max_tokens: int = 128) -> str | None:
    """The first paragraph of the answer, without a leading label or quotes; None if empty or too long."""
    text = _LABEL.sub("", (answer or "").strip())
    text = text.split("\n\n")[0].strip().strip("\"'“”").strip()
    if not text or not tokenize(text) or len(tokenize(text)) > max_tokens:
        return None
    return text


def backtranslate(texts_path: str | Path, output: str | Path, llm: LLM, config: BacktranslationConfig | None = None,
                  progress: Callable[[int, int], None] | None = None) -> dict:
    config = config or BacktranslationConfig()
    started = time.perf_counter()
    skipped: Counter = Counter()
    items = []
    for item in iter_texts(texts_path, config.json_key, skipped):
        if len(tokenize(item["text"])) < config.min_tokens:
            skipped["too_short"] += 1
        elif len(item["text"]) > config.max_chars:
            skipped["too_long"] += 1
        else:
            items.append(item)
    log = PartialLog(output, {"method": "backtranslation", "texts": str(Path(texts_path).resolve()), "model": llm.name, **asdict(config)})
    batches = [items[i : i + config.batch_size] for i in range(0, len(items), config.batch_size)]
    dropped: Counter = Counter()
    resumed = 0
    for number, batch in enumerate(batches):
        key = f"batch-{number}-{batch[0]['id']}-{batch[-1]['id']}"  # position and content: a changed input is redone
        if log.is_done(key):
            resumed += 1
            continue
        prompts = [PROMPTS[detect_lang(item["text"])].format(text=item["text"]) for item in batch]
        answers = llm.generate(prompts, LLMParams(max_tokens=config.max_tokens, temperature=config.temperature,
                                                  top_p=config.top_p, seed=config.seed + number))
        if any(a is None for a in answers):
            dropped["request_failed"] += sum(a is None for a in answers)
            continue  # not marked done: a re-run retries the whole batch
        records = []
        for item, answer in zip(batch, answers):
            instruction = parse_instruction(answer, config.max_instruction_tokens)
            if instruction is None:
                dropped["no_instruction"] += 1
                continue
            records.append({
                "id": f"bt-{item['id']}", "instruction": instruction, "input": "", "output": item["text"],
                "source": "backtranslation",
                "provenance": {"method": "backtranslation", "model": llm.name, "text_id": item["id"]},
            })
        log.commit(key, records)
        if progress:
            progress(number + 1, len(batches))
    keys = [f"batch-{n}-{b[0]['id']}-{b[-1]['id']}" for n, b in enumerate(batches)]
    complete = all(log.is_done(key) for key in keys)
    count = log.finish(order=keys) if complete else len(log.records)
    return {
        "method": "backtranslation", "output": str(output) if complete else str(log.path), "complete": complete,
        "records": count, "texts": len(items), "batches": len(batches), "resumed_batches": resumed,
        "dropped": dict(dropped), "skipped_input": dict(skipped), "requests": llm.stats.as_dict(),
        "seconds": round(time.perf_counter() - started, 2),
    }
