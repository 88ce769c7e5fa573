"""Self-instruct (Wang et al. 2022): grow a task pool from a few seed tasks.

Each round shows the model a handful of known instructions (mostly human seeds, a few of its own
earlier ones) and asks for more. New instructions are cleaned, filtered (length, tasks a text
model cannot do, ROUGE-L >= 0.7 to anything already in the pool) and then completed with an
input and an output by a second request. A round is the unit of resumption.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from knowlm.data.sentences import detect_lang
from knowlm.instruct.llm import LLM, LLMParams
from knowlm.instruct.records import read_seed_tasks
from knowlm.instruct.resume import PartialLog
from knowlm.instruct.rouge_index import RougeIndex, document_frequencies
from knowlm.instruct.text import tokenize

# Tasks a text-only model cannot carry out (the self-instruct paper's list).
BLACKLIST = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
             "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram", "图片", "图像", "视频", "音频", "画图")
_NUMBER = re.compile(r"^\s*(?:\d+\s*[\.\)、:：．]|[-*•])\s*")
_LABEL = re.compile(r"^\s*(?:task|instruction|指令|任务)\s*\d*\s*[:：]\s*", re.IGNORECASE)
_OUTPUT = re.compile(r"(?:^|\n)\s*(?:output|answer|输出|回答)\s*[:：]", re.IGNORECASE)
_INPUT = re.compile(r"^\s*(?:input|输入)\s*[:：]\s*", re.IGNORECASE)
_NO_INPUT = {"", "<noinput>", "noinput", "none", "n/a", "无", "<无>"}

PROMPTS = {
    "en": ("Come up with a series of diverse tasks that a language model can do, one per line. Here are some examples:\n"
           "{examples}\n\nContinue the list with {n} new tasks that differ from the examples, numbered from {start}.\n{start}."),
    "zh": ("请想出一系列语言模型能完成的、多样的任务指令，每行一条。以下是一些例子：\n"
           "{examples}\n\n请继续写出 {n} 条与例子不同的新任务，从 {start} 开始编号。\n{start}."),
}
INSTANCE_PROMPTS = {
    "en": ("Write one example for the task below. If the task needs an input, write it after \"Input:\", "
           "otherwise write \"Input: <noinput>\". Then write the correct answer after \"Output:\".\n\n"
           "Task: {instruction}\nInput:"),
    "zh": ("请为下面的任务写一个例子。如果任务需要输入，写在“输入：”之后，否则写“输入：<无>”。然后在“输出：”之后写出正确答案。\n\n"
           "任务：{instruction}\n输入："),
}


@dataclass
class SelfInstructConfig:
    num_instructions: int = 100  # stop once this many new records exist
    examples_per_prompt: int = 8  # instructions shown per request ...
    machine_examples: int = 2  # ... of which at most this many are earlier generations
    requests_per_round: int = 4
    new_per_request: int = 8  # how many new tasks each request asks for
    rouge_threshold: float = 0.7  # novelty: drop when ROUGE-L F1 to a pool item reaches this
    min_tokens: int = 3
    max_tokens_instruction: int = 150
    max_rounds: int | None = None  # default: 10 + num_instructions
    patience: int = 5  # stop after this many rounds in a row without a new record
    lang: str = "auto"  # prompt language: auto (majority of the seeds), en, zh
    temperature: float = 1.0
    top_p: float = 0.95
    max_tokens: int = 512  # per request (instruction list); instances get the same budget
    seed: int = 0


def parse_instructions(text: str, first_number: int = 1) -> list[str]:
    """Numbered (or bulleted, or one-per-line) tasks -> clean instruction strings, in order."""
    out = []
    for line in (text or "").splitlines():
        line = _LABEL.sub("", _NUMBER.sub("", line)).strip().strip("\"'“”")
        if line:
            out.append(line)
    return out


def instruction_problem(instruction: str, config: SelfInstructConfig) -> str | None:
    """Why a generated instruction is unusable (None when it is fine)."""
    n = len(tokenize(instruction))
    if n < config.min_tokens:
        return "too_short"
    if n > config.max_tokens_instruction:
        return "too_long"
    lowered = instruction.lower()
    if any(re.search(rf"(?<![a-z]){re.escape(word)}(?![a-z])", lowered) for word in BLACKLIST):
        return "needs_non_text"
    if not (instruction[0].isalnum() or detect_lang(instruction[0]) == "zh" or instruction[0] in "“\"'(（"):
        return "starts_with_punctuation"
    return None


def parse_instance(text: str) -> tuple[str, str] | None:
    """``"... Output: ..."`` -> (input, output). Without an output marker the whole answer is the
    output (weak models often skip the labels); None when nothing is left."""
    text = (text or "").strip()
    match = _OUTPUT.search(text)
    if match:
        given, output = text[: match.start()], text[match.end():]
    else:
        given, output = "", text
    given = _INPUT.sub("", given.strip()).strip()
    if given.lower() in _NO_INPUT:
        given = ""
    output = output.strip()
    return (given, output) if output else None


def _prompt_lang(seeds: list[dict], lang: str) -> str:
    if lang in PROMPTS:
        return lang
    votes = Counter(detect_lang(s["instruction"]) for s in seeds)
    return "zh" if votes["zh"] > votes["en"] else "en"


def self_instruct(seeds_path: str | Path, output: str | Path, llm: LLM, config: SelfInstructConfig | None = None,
                  progress: Callable[[int, int], None] | None = None) -> dict:
    """Generate ``config.num_instructions`` new alpaca records into ``output`` (resumable); returns stats."""
    config = config or SelfInstructConfig()
    started = time.perf_counter()
    skipped_input: Counter = Counter()
    seeds = read_seed_tasks(seeds_path, skipped_input)
    lang = _prompt_lang(seeds, config.lang)
    log = PartialLog(output, {"method": "self-instruct", "seeds": str(Path(seeds_path).resolve()), "model": llm.name, **asdict(config)})
    generated = [r for r in log.records]
    # The pool every new instruction must differ from: seeds plus everything generated so far.
    pool_tokens = [tokenize(s["instruction"]) for s in seeds]
    index = RougeIndex(config.rouge_threshold, document_frequencies(pool_tokens))
    for tokens in pool_tokens:
        index.add(tokens)
    for record in generated:
        index.add(tokenize(record["instruction"]))
    dropped: Counter = Counter()
    rounds_done = len(log.done)
    max_rounds = config.max_rounds if config.max_rounds is not None else 10 + config.num_instructions
    dry = 0
    round_no = 1 + max((int(k.split('-')[1]) for k in log.done), default=-1)
    while len(generated) < config.num_instructions and round_no < max_rounds and dry < config.patience:
        rng = random.Random(f"{config.seed}:{round_no}")
        prompts, shown = [], []
        for _ in range(config.requests_per_round):
            machine = rng.sample(generated, min(config.machine_examples, len(generated)))
            human = rng.sample(seeds, min(config.examples_per_prompt - len(machine), len(seeds)))
            examples = [*human, *machine]
            rng.shuffle(examples)
            listing = "\n".join(f"{i}. {e['instruction']}" for i, e in enumerate(examples, 1))
            prompts.append(PROMPTS[lang].format(examples=listing, n=config.new_per_request, start=len(examples) + 1))
            shown.append([e.get("id") for e in examples])
        params = LLMParams(max_tokens=config.max_tokens, temperature=config.temperature, top_p=config.top_p, seed=config.seed * 100_003 + round_no * 1009)
        answers = llm.generate(prompts, params)
        candidates = []  # (instruction, request index, rouge score)
        for request, answer in enumerate(answers):
            if answer is None:
                dropped["request_failed"] += 1
                continue
            for instruction in parse_instructions(answer)[: config.new_per_request]:
                problem = instruction_problem(instruction, config)
                if problem:
                    dropped[problem] += 1
                    continue
                novel, score, _ = index.add_if_novel(tokenize(instruction))
                if not novel:
                    dropped["not_novel"] += 1
                    continue
                candidates.append((instruction, request, round(score, 4)))
        candidates = candidates[: config.num_instructions - len(generated)]
        instances = llm.generate([INSTANCE_PROMPTS[lang].format(instruction=c[0]) for c in candidates], replace(params, seed=params.seed + 503)) if candidates else []
        records = []
        for (instruction, request, score), answer in zip(candidates, instances):
            parsed = parse_instance(answer) if answer is not None else None
            if parsed is None:
                dropped["request_failed" if answer is None else "no_output"] += 1
                continue
            records.append({
                "id": f"si-{config.seed}-{round_no}-{len(records)}",
                "instruction": instruction, "input": parsed[0], "output": parsed[1], "source": "self-instruct",
                "provenance": {"method": "self-instruct", "model": llm.name, "round": round_no,
                               "examples": shown[request], "max_rouge_l": score},
            })
        if all(a is None for a in answers):
            dry += 1  # nothing answered: not marked done, a re-run retries this round
        else:
            log.commit(f"round-{round_no}", records)
            generated += records
            dry = 0 if records else dry + 1
            if progress:
                progress(len(generated), config.num_instructions)
        round_no += 1
    count = log.finish()
    return {
        "method": "self-instruct", "output": str(output), "records": count, "seeds": len(seeds),
        "rounds": round_no, "resumed_rounds": rounds_done, "dropped": dict(dropped), "skipped_input": dict(skipped_input),
        "requests": llm.stats.as_dict(), "stopped": "done" if count >= config.num_instructions else
        ("no_progress" if dry >= config.patience else "max_rounds"), "seconds": round(time.perf_counter() - started, 2),
    }
