"""`knowlm demo`: the whole product end to end on the bundled sample, on CPU, in minutes.

A plain sequence of library calls; each stage's summary goes into ``WORKDIR/report.md``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from knowlm.utils.atomic import atomic_write


@dataclass
class DemoReport:
    workdir: Path
    stages: list[tuple[str, float, dict]] = field(default_factory=list)

    def run(self, name: str, fn: Callable[[], dict], echo: Callable[[str], None] = print) -> dict:
        echo(f"== {name}")
        start = time.perf_counter()
        summary = fn() or {}
        seconds = time.perf_counter() - start
        self.stages.append((name, seconds, summary))
        echo(f"   done in {seconds:.1f}s: {_short(summary)}")
        return summary

    def write(self) -> Path:
        lines = ["# knowlm demo report", "", f"Work directory: `{self.workdir}`", ""]
        lines += ["| stage | seconds |", "|---|---|"]
        lines += [f"| {name} | {seconds:.1f} |" for name, seconds, _ in self.stages]
        for name, _, summary in self.stages:
            lines += ["", f"## {name}", ""]
            for key, value in summary.items():
                if isinstance(value, str) and value.endswith(".png"):
                    lines.append(f"![{key}]({Path(value).relative_to(self.workdir) if Path(value).is_absolute() else value})")
                else:
                    lines.append(f"- **{key}**: `{json.dumps(value, ensure_ascii=False)[:600]}`")
        path = self.workdir / "report.md"
        with atomic_write(path) as handle:
            handle.write("\n".join(lines) + "\n")
        return path


def _short(summary: dict) -> str:
    text = json.dumps({k: v for k, v in summary.items() if not isinstance(v, (list, dict))}, ensure_ascii=False)
    return text[:300]


def stage_model(workdir: Path) -> dict:
    """Tokenizer trained on the bundled corpus and a small random LLaMA."""
    from knowlm.models.tiny import make_tiny

    model_dir = make_tiny(workdir / "base", hidden_size=128, intermediate_size=344, num_hidden_layers=4, max_position_embeddings=1024)
    return {"model_dir": str(model_dir)}


def stage_kg2instruct(workdir: Path) -> dict:
    """IE instructions and gold records from the bundled corpus and knowledge graph."""
    from knowlm import resources
    from knowlm.ie.kg2instruct import KG2InstructConfig, kg2instruct, load_rules

    output = workdir / "kg2instruct"
    stats = kg2instruct(
        [resources.corpus_path()],
        [resources.kg_path()],
        output,
        KG2InstructConfig(styles=("json",), rules=load_rules(resources.kg_rules_path())),
        schema_path=resources.kg_schema_path(),
        gold_path=resources.kg_gold_path(),
    )
    return {
        "output": str(output),
        "records": stats["records"],
        "triples": stats["triples"],
        "instructions_per_split": stats["instructions_per_split"],
        "distant_supervision_quality": stats.get("quality"),
        "stats_plot": str(output / "stats.png"),
    }


def held_out_gold(kg2instruct_dir: Path, limit: int = 12) -> list[dict]:
    """Gold records of documents in the test split (never seen in tuning), English first."""
    from knowlm.ie.kg2instruct import split_of
    from knowlm.utils.jsonl import read_jsonl

    records = read_jsonl(kg2instruct_dir / "records.jsonl")
    test = [r for r in records if split_of(r["id"].split("#")[0], (0.8, 0.1, 0.1), 0) == "test"]
    test.sort(key=lambda r: (r["lang"] != "en", len(r["text"])))
    return test[:limit]


def stage_cases(model_dir: Path, workdir: Path, adapter: str | None = None) -> dict:
    """Run the bundled example cases (general and IE) through the batched generator."""
    from knowlm.infer import load_generator, preset
    from knowlm.infer.cases import run_cases_file

    examples = Path(__file__).resolve().parent / "resources" / "examples"
    generator = load_generator(str(model_dir), adapter)
    summary: dict[str, Any] = {}
    for name in ("general_cases", "ie_cases"):
        results = run_cases_file(generator, examples / f"{name}.jsonl", workdir / f"{name}.out.jsonl", preset("default").updated(max_new_tokens=24), batch_size=16)
        summary[name] = {"cases": len(results), "first_answer": results[0]["output"][:80]}
    return summary


def run_demo(workdir: Path, echo: Callable[[str], None] = print) -> Path:
    import torch

    from knowlm import data, edit, instruct, serve, train, weights
    from knowlm.demo_extract import extract_stage

    torch.set_num_threads(1)  # tiny models are overhead-bound: one thread is as fast, and far faster on a busy machine
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    report = DemoReport(workdir)
    base = Path(report.run("build tokenizer and tiny LLaMA", lambda: stage_model(workdir), echo)["model_dir"])
    corpus = report.run("prepare corpus (clean, dedup, split, pack, tokenize)", lambda: data.demo_stage(workdir, base), echo)
    pretrained = report.run("continue pretraining", lambda: train.demo_stage_pretrain(workdir, base, corpus["prefix"], steps=30), echo)
    pretrained_dir = Path(pretrained["output"])
    kg = report.run("KG2Instruction (distant supervision)", lambda: stage_kg2instruct(workdir), echo)
    gold = held_out_gold(Path(kg["output"]))
    report.run("extract + evaluate before tuning", lambda: extract_stage(workdir, pretrained_dir, gold=gold, tag="ie-before"), echo)
    tuned = report.run("LoRA instruction tuning", lambda: train.demo_stage_sft(workdir, pretrained_dir, Path(kg["output"]) / "train.jsonl", steps=60), echo)
    merged = report.run("merge LoRA + export GGUF", lambda: weights.demo_stage(workdir, pretrained_dir, tuned["output"]), echo)
    merged_dir = Path(merged["merged_model"])
    report.run("extract + evaluate after tuning", lambda: extract_stage(workdir, merged_dir, gold=gold, tag="ie-after"), echo)
    report.run(
        "extract + evaluate after tuning, schema-constrained decoding",
        lambda: extract_stage(workdir, merged_dir, gold=gold, tag="ie-after-constrained", constrained=True, max_new_tokens=160),
        echo,
    )
    report.run("run example cases", lambda: stage_cases(merged_dir, workdir), echo)
    report.run("knowledge editing (ROME)", lambda: edit.demo_stage(workdir, merged_dir), echo)
    report.run("serve: /generate, chat completion, /extract", lambda: serve.demo_stage(workdir, merged_dir), echo)
    report.run("select instructions (length, dedup, ROUGE-L, MTLD, language)", lambda: instruct.demo_stage(workdir, Path(kg["output"]) / "train.jsonl"), echo)
    return report.write()
