"""Micro precision/recall/F1 for extraction, defined once (DESIGN §3).

Sets of tuples per text (duplicates count once), NA relations excluded on both sides, F1 from
unrounded P and R, deterministic (sorted) per-type tables. Predictions are matched to gold by
``id``, or by position when the gold records have no ids. A prediction carrying
``parse_error`` counts as predicting nothing and is tallied by reason.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Callable, Iterable

from knowlm.ie.records import is_na

MEASURES = ("entity", "relation", "event_trigger", "event_argument")


def _strict(s: Any) -> str:
    return str(s).strip()


def _normalized(s: Any) -> str:
    return " ".join(unicodedata.normalize("NFKC", str(s)).casefold().split())


def normalizer(match: str) -> Callable[[Any], str]:
    from knowlm.errors import KnowlmError

    if match == "strict":
        return _strict
    if match == "normalized":
        return _normalized
    raise KnowlmError(f"unknown match mode {match!r}; use strict or normalized")


def tuples(record: dict, norm: Callable[[Any], str]) -> dict[str, set[tuple]]:
    """The scored tuple sets of one record; the last element of each tuple's key is its type for per-type tables."""
    out: dict[str, set[tuple]] = {m: set() for m in MEASURES}
    if record.get("parse_error"):
        return out
    for e in record.get("entities") or []:
        if isinstance(e, dict) and e.get("text") is not None and e.get("type") is not None:
            out["entity"].add((norm(e["text"]), norm(e["type"])))
    for r in record.get("relations") or []:
        if not isinstance(r, dict):
            continue
        head, rel, tail = r.get("head", r.get("subject")), r.get("relation", r.get("predicate")), r.get("tail", r.get("object"))
        if head is None or rel is None or tail is None or is_na(rel):
            continue
        out["relation"].add((norm(head), norm(rel), norm(tail)))
    for ev in record.get("events") or []:
        if not isinstance(ev, dict) or ev.get("trigger") is None or ev.get("type") is None:
            continue
        etype = norm(ev["type"])
        out["event_trigger"].add((norm(ev["trigger"]), etype))
        for a in ev.get("arguments") or []:
            if isinstance(a, dict) and a.get("text") is not None and a.get("role") is not None:
                out["event_argument"].add((etype, norm(a["role"]), norm(a["text"])))
    return out


def _type_of(measure: str, t: tuple) -> str:
    return {"entity": t[1], "relation": t[1], "event_trigger": t[1], "event_argument": t[1]}[measure]


def prf(tp: int, n_pred: int, n_gold: int) -> dict:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "tp": tp, "n_pred": n_pred, "n_gold": n_gold}


class _Counts:
    def __init__(self) -> None:
        self.total = {m: [0, 0, 0] for m in MEASURES}  # tp, n_pred, n_gold
        self.per_type: dict[str, dict[str, list[int]]] = {m: {} for m in MEASURES}

    def add(self, gold: dict[str, set], pred: dict[str, set]) -> None:
        for m in MEASURES:
            g, p = gold[m], pred[m]
            hit = g & p
            self.total[m][0] += len(hit)
            self.total[m][1] += len(p)
            self.total[m][2] += len(g)
            table = self.per_type[m]
            for bucket, index in ((hit, 0), (p, 1), (g, 2)):
                for t in bucket:
                    table.setdefault(_type_of(m, t), [0, 0, 0])[index] += 1

    def report(self, failures: int) -> dict:
        out = {}
        for m in MEASURES:
            entry = prf(*self.total[m])
            entry["per_type"] = {k: prf(*v) for k, v in sorted(self.per_type[m].items())}
            entry["parse_failures"] = failures
            out[m] = entry
        return out


def _pairs(gold: list[dict], pred: list[dict]) -> tuple[list[tuple[dict, dict]], int, int]:
    """(gold, pred) pairs; counts of gold records with no prediction and predictions with no gold."""
    if gold and all(g.get("id") is not None for g in gold):
        by_id: dict[str, dict] = {}
        for p in pred:
            if p.get("id") is not None:
                by_id.setdefault(str(p["id"]), p)
        pairs = [(g, by_id.get(str(g["id"]), {"parse_error": "missing"})) for g in gold]
        gold_ids = {str(g["id"]) for g in gold}
        missing = sum(1 for g in gold if str(g["id"]) not in by_id)
        extra = sum(1 for k in by_id if k not in gold_ids)
        return pairs, missing, extra
    pairs = [(g, pred[i] if i < len(pred) else {"parse_error": "missing"}) for i, g in enumerate(gold)]
    return pairs, max(0, len(gold) - len(pred)), max(0, len(pred) - len(gold))


def _failure_reasons(pred: dict) -> list[str]:
    if pred.get("parse_errors"):
        return [str(r) for r in pred["parse_errors"]]
    if pred.get("parse_error"):
        return [str(pred["parse_error"])]
    return []


def score(gold_records: Iterable[dict], pred_records: Iterable[dict], match: str = "strict") -> dict:
    """The ``knowlm eval --report`` object: one entry per measure plus per-source scores and
    parse-failure counts by reason."""
    norm = normalizer(match)
    gold, pred = list(gold_records), list(pred_records)
    pairs, missing, extra = _pairs(gold, pred)
    overall = _Counts()
    by_source: dict[str, _Counts] = {}
    reasons: dict[str, int] = {}
    failed_records = 0
    source_failures: dict[str, int] = {}
    for g, p in pairs:
        gt, pt = tuples(g, norm), tuples(p, norm)
        overall.add(gt, pt)
        source = str(g.get("source") or "default")
        by_source.setdefault(source, _Counts()).add(gt, pt)
        why = _failure_reasons(p)
        for reason in why:
            reasons[reason] = reasons.get(reason, 0) + 1
        if p.get("parse_error"):
            failed_records += 1
            source_failures[source] = source_failures.get(source, 0) + 1
    report = overall.report(failed_records)
    report["per_source"] = {s: c.report(source_failures.get(s, 0)) for s, c in sorted(by_source.items())}
    report["parse_failures"] = {"total": failed_records, "by_reason": dict(sorted(reasons.items()))}
    report["n_texts"] = len(pairs)
    report["unmatched_predictions"] = extra
    report["missing_predictions"] = missing
    report["match"] = match
    return report


def measures_present(report: dict) -> list[str]:
    """Measures with any gold or predicted tuple (what is worth printing)."""
    return [m for m in MEASURES if report[m]["n_gold"] or report[m]["n_pred"]]


def format_table(report: dict) -> str:
    """A plain-text summary table (the CLI prints it with rich)."""
    lines = [f"{'measure':<16}{'P':>8}{'R':>8}{'F1':>8}{'tp':>7}{'pred':>7}{'gold':>7}"]
    for m in measures_present(report) or list(MEASURES[:1]):
        e = report[m]
        lines.append(
            f"{m:<16}{e['precision'] * 100:>8.2f}{e['recall'] * 100:>8.2f}{e['f1'] * 100:>8.2f}{e['tp']:>7}{e['n_pred']:>7}{e['n_gold']:>7}"
        )
    pf = report["parse_failures"]
    lines.append(f"parse failures: {pf['total']}" + (f" ({', '.join(f'{k}: {v}' for k, v in pf['by_reason'].items())})" if pf["by_reason"] else ""))
    return "\n".join(lines)


def plot_per_type(report: dict, path) -> None:
    """A bar chart of per-type F1 for every measure present (PNG)."""
    import warnings

    from knowlm.utils.atomic import atomic_write
    from knowlm.utils.plotting import pyplot

    plt = pyplot()  # Chinese type names need the CJK font it selects when the system has one
    measures = measures_present(report) or ["entity"]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig, axes = plt.subplots(len(measures), 1, figsize=(8, 2.6 * len(measures) + 0.6), squeeze=False)
        for ax, m in zip(axes[:, 0], measures):
            per_type = report[m]["per_type"]
            names = list(per_type)
            values = [per_type[n]["f1"] * 100 for n in names]
            ax.bar(range(len(names)), values, color="#4477aa")
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
            ax.set_ylim(0, 100)
            ax.set_ylabel("F1 (%)")
            ax.set_title(f"{m}: micro F1 {report[m]['f1'] * 100:.1f}%")
        fig.tight_layout()
        with atomic_write(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)
