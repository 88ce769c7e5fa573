"""The statistics report of a KG2Instruction run: markdown plus a bar chart."""

from __future__ import annotations

from pathlib import Path


def write_report(directory: Path, stats: dict) -> None:
    from knowlm.utils.plotting import pyplot

    plt = pyplot()

    per_relation = stats["triples_per_relation"]
    drops = stats["dropped_by_rule"]
    fig, axes = plt.subplots(1, 2, figsize=(12, max(3, 0.28 * len(per_relation) + 1)))
    names = list(per_relation)[::-1]
    axes[0].barh(names, [per_relation[n] for n in names], color="#4C72B0")
    axes[0].set_title("triples per relation")
    axes[1].barh(list(drops) or ["(none)"], list(drops.values()) or [0], color="#C44E52")
    axes[1].set_title("dropped candidates per rule")
    fig.tight_layout()
    fig.savefig(directory / "stats.png", dpi=100)
    plt.close(fig)

    link = stats["linking"]
    lines = [
        "# KG2Instruction statistics",
        "",
        f"- documents: {stats['documents']}, sentences: {stats['sentences']}, alias mentions: {stats['mentions']}",
        f"- linking: {link['unambiguous']} unambiguous, {link['resolved']} ambiguous resolved by context, "
        f"{link['unresolved']} ambiguous dropped",
        f"- candidate triples: {stats['candidate_triples']}, kept: {stats['triples']}",
        f"- records: {stats['records']} ({stats['records_per_split']}), instructions: {stats['instructions_per_split']}",
        "",
        "| dropped by rule | count |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in stats["dropped_by_rule"].items()],
        "",
        "| relation | triples |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in stats["triples_per_relation"].items()],
        "",
        "![statistics](stats.png)",
    ]
    if "quality" in stats:
        q = stats["quality"]
        lines[6:6] = [
            f"- quality against {q['documents']} hand-annotated documents: precision {q['precision']:.3f}, "
            f"recall {q['recall']:.3f}, F1 {q['f1']:.3f}"
        ]
    (directory / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
