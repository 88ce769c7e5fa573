"""The demo's extraction step: the held-out hand-annotated documents, before and after tuning.

Gold is ``kg_gold.jsonl``: documents of the bundled corpus that no training stage ever reads
(``kg2instruct --holdout`` keeps them out of the instructions, the pretraining texts and the
augmentation). They are annotated with relations; their entities are those relations' heads and
tails typed by the knowledge graph (:func:`knowlm.ie.kg2instruct.records.argument_entities`), the
definition ``kg2instruct --entities arguments`` trains with.

It lives beside ``knowlm.demo`` rather than in ``knowlm.ie`` because it loads models: ``ie`` stays
torch-free and only receives a :class:`knowlm.infer.TextGenerator`.
"""

from __future__ import annotations

import json
from pathlib import Path

from knowlm.utils.atomic import atomic_write
from knowlm.utils.jsonl import read_jsonl, write_jsonl

MEASURES = ("entity", "relation")
SCHEMA_FILE = "ie_schema.json"  # {task: {lang: [types or relations]}} a tuned model was taught
# The held-out documents are asked paragraph by paragraph: 92% of the recipe's training inputs are
# this short or shorter, and the tiny model answers few items for a whole 100-250-token document.
CHUNK_TOKENS = 96


def held_out_gold(path: str | Path | None = None, kg: str | Path | None = None) -> list[dict]:
    """The hand-annotated documents (sorted by id), each with entities derived from its relations."""
    from knowlm import resources
    from knowlm.ie.kg2instruct import KnowledgeGraph
    from knowlm.ie.kg2instruct.records import argument_entities, entity_types

    types = entity_types(KnowledgeGraph.load([kg or resources.kg_path()]))
    gold = sorted(read_jsonl(path or resources.kg_gold_path()), key=lambda r: str(r["id"]))
    for record in gold:
        record["entities"] = argument_entities(record, types)
    return gold


def model_schema(model_dir: str | Path) -> dict:
    """The schema a tuned model was taught (written next to its weights by the recipe)."""
    from knowlm.errors import KnowlmError

    path = Path(model_dir) / SCHEMA_FILE
    if not path.is_file():
        raise KnowlmError(f"{path} not found: the model directory does not say which schema it was tuned on")
    return json.loads(path.read_text(encoding="utf-8"))


def evaluate_stage(workdir: str | Path, model_dir: str | Path, tag: str, gold: list[dict], schema: dict,
                   constrained: bool = False, max_new_tokens: int = 128, batch_size: int = 32,
                   max_input_tokens: int | None = CHUNK_TOKENS, wording: str | None = None) -> dict:
    """Extract every task of ``schema`` from ``gold`` with ``model_dir`` and score it.

    Texts are asked in chunks of at most ``max_input_tokens`` tokens (cut at sentences; ``None``: whole).
    Writes ``WORKDIR/TAG/pred.jsonl`` and ``report.json`` (scores overall and per language) and
    returns the stage summary: P/R/F1 per measure for ``all``, ``en`` and ``zh``, parse failures,
    prompts and seconds.
    """
    from knowlm.decoding import DecodingParams
    from knowlm.ie.evaluate import extract_and_score
    from knowlm.infer import load_generator

    generator = load_generator(str(model_dir), device="cpu", ie_wording=wording)
    result = extract_and_score(generator, gold, schema, constrained=constrained, batch_size=batch_size,
                               params=DecodingParams(max_new_tokens=max_new_tokens), max_input_tokens=max_input_tokens)
    out = Path(workdir) / tag
    write_jsonl(out / "pred.jsonl", result["predictions"])
    write_jsonl(out / "gold.jsonl", gold)  # what was scored against: `knowlm eval --gold .../gold.jsonl --pred .../pred.jsonl`
    with atomic_write(out / "report.json") as handle:
        json.dump(result["scores"], handle, ensure_ascii=False, indent=2)
    return {
        "stage": tag,
        "model": str(model_dir),
        "documents": len(gold),
        "constrained": constrained,
        "max_input_tokens": max_input_tokens,
        "wording": getattr(generator, "ie_wording", "full"),
        "scores": {part: {m: {k: round(v[m][k], 4) for k in ("precision", "recall", "f1")} for m in MEASURES if m in v}
                   for part, v in result["summary"].items()},
        "parse_failures": result["parse_failures"],
        "prompts": result["prompts"],
        "seconds": round(result["seconds"], 1),
        "pred": str(out / "pred.jsonl"),
        "report": str(out / "report.json"),
    }


def extraction_summary(stages: dict[str, dict]) -> dict:
    """``summary.json``'s ``extraction``: ``held_out_documents`` and, per stage, P/R/F1 per measure
    (plus the same per language under ``by_language`` and the parse failures)."""
    out: dict = {"held_out_documents": next(iter(stages.values()))["documents"]}
    for name, stage in stages.items():
        out[name] = {m: dict(stage["scores"]["all"][m]) for m in MEASURES}
        out[name]["by_language"] = {lang: s for lang, s in stage["scores"].items() if lang != "all"}
        out[name]["parse_failures"] = stage["parse_failures"]
    return out


def plot_extraction(stages: dict[str, dict], path: str | Path) -> Path:
    """Grouped bars: F1 per measure and language for each stage (PNG)."""
    from knowlm.utils.plotting import pyplot

    plt = pyplot()
    parts = ["all", "en", "zh"]
    fig, axes = plt.subplots(1, len(MEASURES), figsize=(11, 3.8), sharey=True)
    width = 0.8 / max(1, len(stages))
    colors = ["#bbbbbb", "#4477aa", "#66ccee", "#228833"]
    for ax, measure in zip(axes, MEASURES):
        for i, (name, stage) in enumerate(stages.items()):
            values = [stage["scores"].get(p, {}).get(measure, {}).get("f1", 0.0) * 100 for p in parts]
            bars = ax.bar([x + i * width for x in range(len(parts))], values, width, label=name.replace("_", " "), color=colors[i % 4])
            for bar, value in zip(bars, values):
                ax.text(bar.get_x() + bar.get_width() / 2, value + 1, f"{value:.0f}", ha="center", fontsize=7)
        ax.set_xticks([x + width * (len(stages) - 1) / 2 for x in range(len(parts))])
        ax.set_xticklabels(["all", "English", "中文"])
        ax.set_ylim(0, 100)
        ax.set_title(f"{measure} F1 (%), strict match")
    axes[0].set_ylabel("F1 (%)")
    axes[-1].legend(loc="upper right", fontsize=8)
    fig.suptitle(f"held-out hand-annotated documents ({next(iter(stages.values()))['documents']})")
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)
    return path


def _triples(record: dict) -> list[tuple[str, str, str]]:
    return [(r["head"], r["relation"], r["tail"]) for r in record.get("relations") or []]


def examples(gold: list[dict], predictions: list[dict], per_language: int = 2) -> list[dict]:
    """Real documents with predicted triples (right or wrong) and the gold triples missed: for each
    language the document with the most right triples and the one ranked in the middle."""
    by_id = {p["id"]: p for p in predictions}
    chosen = []
    for lang in ("en", "zh"):
        scored = []
        for record in gold:
            if record.get("lang") != lang:
                continue
            predicted, truth = _triples(by_id.get(str(record["id"]), {})), set(_triples(record))
            scored.append((sum(t in truth for t in set(predicted)), str(record["id"]), record, predicted, truth))
        scored.sort(key=lambda s: (-s[0], s[1]))
        picks = [scored[0], scored[len(scored) // 2]] if len(scored) > 1 else scored
        for _, _, record, predicted, truth in picks[:per_language]:
            chosen.append({
                "id": record["id"], "lang": lang, "text": record["text"],
                "predicted": [{"triple": list(t), "correct": t in truth} for t in dict.fromkeys(predicted)],
                "missed": [list(t) for t in _triples(record) if t not in set(predicted)],
            })
    return chosen


def examples_markdown(items: list[dict]) -> str:
    lines = []
    for item in items:
        lines += [f"**{item['id']}** ({item['lang']}): {item['text']}", ""]
        for p in item["predicted"]:
            lines.append(f"- {'✓' if p['correct'] else '✗'} ({', '.join(p['triple'])})")
        for m in item["missed"]:
            lines.append(f"- missed: ({', '.join(m)})")
        lines.append("")
    return "\n".join(lines)


def scores_text(stages: dict[str, dict]) -> str:
    """Plain text for a terminal: per stage and language, P/R/F1 per measure, then parse failures."""
    lines = [f"held-out documents: {next(iter(stages.values()))['documents']} (strict match)"]
    for name, stage in stages.items():
        for part, scores in stage["scores"].items():
            cells = "  ".join(f"{m} P {scores[m]['precision']:.3f} R {scores[m]['recall']:.3f} F1 {scores[m]['f1']:.3f}" for m in MEASURES)
            lines.append(f"{name:<18} {part:<4} {cells}")
        lines.append(f"{name:<18} parse failures {stage['parse_failures']} of {stage['prompts']} prompts, {stage['seconds']:.1f} s")
    return "\n".join(lines)


def scores_table(stages: dict[str, dict]) -> str:
    """Markdown: one row per stage and language, P/R/F1 per measure."""
    head = "| stage | language | " + " | ".join(f"{m} P | {m} R | {m} F1" for m in MEASURES) + " | parse failures |"
    lines = [head, "|" + "---|" * (3 + 3 * len(MEASURES))]
    for name, stage in stages.items():
        for part, scores in stage["scores"].items():
            cells = " | ".join(f"{scores[m]['precision']:.3f} | {scores[m]['recall']:.3f} | {scores[m]['f1']:.3f}" for m in MEASURES)
            lines.append(f"| {name} | {part} | {cells} | {stage['parse_failures'] if part == 'all' else ''} |")
    return "\n".join(lines)
