"""The statistics report of a KG2Instruction run: markdown plus a bar chart."""

from __future__ import annotations

from pathlib import Path


def write_report(directory: Path, stats: dict) -> None:
    from knowlm.utils.atomic import atomic_write
    from knowlm.utils.plotting import labelled_bars, pyplot

    plt = pyplot()

    per_relation = stats["triples_per_relation"]
    drops = stats["dropped_by_rule"]
    fig, axes = plt.subplots(1, 2, figsize=(12, max(3, 0.28 * max(len(per_relation), len(drops)) + 1.2)))
    names = list(per_relation)[::-1] or ["(none)"]
    labelled_bars(axes[0], names, [per_relation.get(n, 0) for n in names], horizontal=True, fmt="{:.0f}", color="#4C72B0")
    axes[0].set_title("triples per relation")
    axes[0].set_xlabel("triples kept")
    axes[0].set_ylabel("relation")
    rules = list(drops)[::-1] or ["(none)"]
    labelled_bars(axes[1], rules, [drops.get(n, 0) for n in rules], horizontal=True, fmt="{:.0f}", color="#C44E52")
    axes[1].set_title("dropped candidates per rule")
    axes[1].set_xlabel("candidate triples dropped")
    axes[1].set_ylabel("rule")
    fig.tight_layout()
    with atomic_write(directory / "stats.png", "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
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
