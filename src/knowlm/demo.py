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
from knowlm.utils.jsonl import read_jsonl


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
                if key == "markdown":  # a stage's own tables and examples
                    lines += ["", value, ""]
                elif key.startswith("_"):  # data for summary.json that the stage's markdown already shows
                    continue
                elif isinstance(value, str) and value.endswith(".png"):
                    lines.append(f"![{key}]({Path(value).relative_to(self.workdir) if Path(value).is_absolute() else value})")
                else:
                    lines.append(f"- **{key}**: `{json.dumps(value, ensure_ascii=False)[:600]}`")
        path = self.workdir / "report.md"
        with atomic_write(path) as handle:
            handle.write("\n".join(lines) + "\n")
        return path


def _short(summary: dict) -> str:
    text = json.dumps({k: v for k, v in summary.items() if not isinstance(v, (list, dict)) and k != "markdown"}, ensure_ascii=False)
    return text[:300]


MARKER = ".knowlm-demo"  # written into a work directory the demo created; only such a directory is reused


def is_demo_workdir(workdir: Path) -> bool:
    """True for a directory an earlier ``knowlm demo`` created (it may be reused without --overwrite)."""
    return (Path(workdir) / MARKER).is_file()


def claim_workdir(workdir: Path, overwrite: bool = False) -> Path:
    """The work directory, created and marked; an existing file or a non-empty directory the demo did
    not create is refused (KnowlmError: one line, exit 2) and left untouched, unless ``overwrite``."""
    from knowlm.errors import KnowlmError

    workdir = Path(workdir).expanduser().resolve()
    if workdir.exists() and not workdir.is_dir():
        raise KnowlmError(f"--workdir {workdir} exists and is not a directory; choose a new directory")
    if workdir.is_dir() and any(workdir.iterdir()) and not is_demo_workdir(workdir) and not overwrite:
        raise KnowlmError(f"--workdir {workdir} is a non-empty directory that knowlm demo did not create; "
                          "choose a new or empty directory (nothing was changed)")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("created by knowlm demo; the demo may reuse and overwrite this directory\n", encoding="utf-8")
    return workdir


def stage_instructions(workdir: Path) -> dict:
    """The IE recipe's data: KG2Instruction over the bundled corpus and KG, held-out documents excluded."""
    from knowlm.train import ie_recipe

    output = workdir / "kg2instruct"
    stats = ie_recipe.build_instructions(output)
    return {
        "output": str(output),
        "held_out_documents": stats["held_out_documents"],
        "records": stats["records"],
        "augmented_records": stats["augmented_records"],
        "triples": stats["triples"],
        "instructions_per_split": stats["instructions_per_split"],
        "distant_supervision_quality": stats.get("quality"),
        "stats_plot": str(output / "stats.png"),
    }


def stage_shipped_models(workdir: Path) -> dict:
    """Copy the checkpoints the recipe produced (shipped in the package) into the work directory and
    check they were trained from today's recipe files and data."""
    import shutil

    from knowlm.models.manifest import read_manifest
    from knowlm.train import ie_recipe

    out = {}
    for name, source, target in (("pretrained", ie_recipe.shipped_dir("pretrained"), workdir / "pretrain"),
                                 ("tuned", ie_recipe.shipped_dir("tuned"), workdir / "ie")):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
        out[name] = str(target)
    manifest = read_manifest(out["tuned"])
    recipe = manifest.get("recipe", {})
    out["matches_current_recipe"] = recipe.get("fingerprint") == ie_recipe.fingerprint()
    out["training_seconds"] = recipe.get("training_seconds")
    out["retrain_with"] = "knowlm demo --retrain"
    return out


def stage_retrain(workdir: Path, echo: Callable[[str], None]) -> dict:
    """The whole recipe on this machine (what produced the shipped checkpoints)."""
    from knowlm.train import ie_recipe

    return ie_recipe.retrain(workdir / "recipe", echo=echo, instructions=workdir / "kg2instruct")


def stage_cases(model_dir: Path, workdir: Path, adapter: str | None = None) -> dict:
    """Run the bundled example cases (general and IE) through the batched generator."""
    from knowlm.infer import load_generator, preset
    from knowlm.infer.cases import run_cases_file

    examples = Path(__file__).resolve().parent / "resources" / "examples"
    generator = load_generator(str(model_dir), adapter)
    summary: dict[str, Any] = {}
    for name in ("general_cases", "ie_tiny_cases"):
        cases = examples / f"{name}.jsonl"
        results = run_cases_file(generator, cases, workdir / f"{name}.out.jsonl", preset("default").updated(max_new_tokens=64), batch_size=16)
        summary[name] = {"cases": len(results), "first_answer": results[0]["output"][:120]}
        expected = [row.get("expected") for row in read_jsonl(cases)]
        if any(e is not None for e in expected):  # IE cases carry the gold answer: count exact JSON answers
            summary[name]["exact_answers"] = sum(_json_or_none(r["output"]) == e for r, e in zip(results, expected))
    return summary


def sample_lines(source: Path, target: Path, every: int) -> Path:
    """Every ``every``-th line of ``source`` (a deterministic spread over corpus, passage and variant
    instructions) into ``target``: selection over all ~125k instructions would take the demo many minutes."""
    with open(source, encoding="utf-8") as src, atomic_write(target) as out:
        for index, line in enumerate(src):
            if index % every == 0:
                out.write(line)
    return target


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def stage_comparison(workdir: Path, gold: list[dict], stages: dict[str, dict]) -> dict:
    """The before/after table, chart and real examples of the held-out extraction."""
    from knowlm.demo_extract import examples, examples_markdown, extraction_summary, plot_extraction, scores_table

    chart = plot_extraction(stages, workdir / "extraction.png")
    picked = examples(gold, read_jsonl(stages["after"]["pred"]))
    after = stages["after"]
    protocol = (f"Each document is asked in chunks of at most {after['max_input_tokens']} tokens, cut at sentences"
                if after.get("max_input_tokens") else "Each document is asked whole")
    markdown = protocol + ".\n\n" + scores_table(stages) + "\n\nExamples after tuning (✓ right, ✗ wrong, missed = gold not found):\n\n" + examples_markdown(picked)
    return {"_extraction": extraction_summary(stages), "chart": str(chart), "_examples": picked, "markdown": markdown}


def run_demo(workdir: Path, echo: Callable[[str], None] = print, retrain: bool = False, overwrite: bool = False) -> Path:
    import torch

    from knowlm import edit, instruct, serve, train, weights
    from knowlm.demo_extract import evaluate_stage, held_out_gold, model_schema, scores_text
    from knowlm.models.templates import resolve_ie_wording
    from knowlm.train import ie_recipe

    torch.set_num_threads(1)  # tiny models are overhead-bound: one thread is as fast, and far faster on a busy machine
    started = time.perf_counter()
    workdir = claim_workdir(workdir, overwrite)
    report = DemoReport(workdir)
    kg = report.run("KG2Instruction: NER/RE instructions, hand-annotated documents held out", lambda: stage_instructions(workdir), echo)
    kg_dir = Path(kg["output"])
    if retrain:
        models = report.run("the IE recipe: tiny base, pretraining (ie_tiny_pretrain), tuning (ie_tiny_sft)", lambda: stage_retrain(workdir, echo), echo)
    else:
        models = report.run("the IE recipe's checkpoints (shipped; knowlm demo --retrain reproduces them)", lambda: stage_shipped_models(workdir), echo)
    pretrained, tuned = Path(models["pretrained"]), Path(models["tuned"])
    report.run("prepare corpus (clean, dedup, split, pack at the training length, tokenize)",
               lambda: ie_recipe.prepare_summary(kg_dir, pretrained, workdir / "corpus" / "texts"), echo)
    gold = held_out_gold()
    schema = model_schema(tuned)
    stages = {
        "before": report.run("extract + evaluate before tuning (held-out documents)", lambda: evaluate_stage(workdir, pretrained, "ie-before", gold, schema,
                                                                                                         wording=resolve_ie_wording(str(tuned))), echo),
        "after": report.run("extract + evaluate after tuning", lambda: evaluate_stage(workdir, tuned, "ie-after", gold, schema), echo),
        "after_constrained": report.run("extract + evaluate after tuning, schema-constrained decoding",
                                        lambda: evaluate_stage(workdir, tuned, "ie-after-constrained", gold, schema, constrained=True), echo),
    }
    comparison = report.run("held-out extraction: before vs after tuning", lambda: stage_comparison(workdir, gold, stages), echo)
    echo(scores_text(stages))
    lora = report.run("LoRA instruction tuning (the 13B path, a few steps)", lambda: train.demo_stage_sft(workdir, pretrained, kg_dir / "train.jsonl", steps=30), echo)
    report.run("merge LoRA + export GGUF", lambda: weights.demo_stage(workdir, pretrained, lora["output"]), echo)
    report.run("run example cases", lambda: stage_cases(tuned, workdir), echo)
    report.run("knowledge editing (ROME)", lambda: edit.demo_stage(workdir, tuned), echo)
    report.run("serve: /generate, chat completion, /extract", lambda: serve.demo_stage(workdir, tuned), echo)
    report.run("select instructions (length, dedup, ROUGE-L, MTLD, language)", lambda: instruct.demo_stage(workdir, sample_lines(kg_dir / "train.jsonl", workdir / "instructions.sample.jsonl", every=8)), echo)
    summary = {
        "model": str(tuned),
        "pretrained_model": str(pretrained),
        "retrained": retrain,
        "extraction": comparison["_extraction"],
        "examples": comparison["_examples"],
        "stages": {name: round(seconds, 1) for name, seconds, _ in report.stages},
        "seconds": round(time.perf_counter() - started, 1),
    }
    with atomic_write(workdir / "summary.json") as handle:
        json.dump(summary, handle, ensure_ascii=False, indent=2)
    return report.write()
