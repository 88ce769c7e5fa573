"""Micro precision/recall/F1 for extraction, defined once (DESIGN §3).

Tuples per text, NA relations excluded on both sides, F1 from unrounded P and R, deterministic
(sorted) per-type tables. Two ways to count (``count``):

* ``set`` (default): each distinct tuple of a text counts once, on both sides.
* ``duplicates``: every tuple counts as often as it is written, a hit consumes one gold copy
  (IEPile's default ``match_mode="normal"``: ``tp`` is the multiset intersection).

Predictions are matched to gold by ``id`` (by position when the gold records have no ids);
prediction records that share an id (one per prompt, IEPile's layout) are merged first and
counted in ``merged_predictions``. A prediction carrying ``parse_error`` counts as predicting
nothing and is tallied by reason. A record with a ``task`` (``ner``/``re``/``ee``/``eet``/
``eea``/``spo`` or IEPile's upper-case names) is scored on its task's measures only, SPO
relations with their subject and object types, and the report adds ``per_task`` scores under
IEPile's task names.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from typing import Any, Callable, Iterable

from knowlm.ie.records import is_na

MEASURES = ("entity", "relation", "event_trigger", "event_argument")
COUNTS = ("set", "duplicates")
TASK_MEASURES = {
    "ner": ("entity",),
    "re": ("relation",),
    "spo": ("relation",),
    "ee": ("event_trigger", "event_argument"),
    "eet": ("event_trigger",),
    "eea": ("event_argument",),
}
IEPILE_NAMES = {"ner": "NER", "re": "RE", "spo": "SPO", "ee": "EE", "eet": "EET", "eea": "EEA"}


def _strict(s: Any) -> str:
    return str(s).strip()


def _exact(s: Any) -> str:
    return str(s)


def _normalized(s: Any) -> str:
    return " ".join(unicodedata.normalize("NFKC", str(s)).casefold().split())


def normalizer(match: str) -> Callable[[Any], str]:
    """``strict`` (trimmed), ``exact`` (as written, IEPile's comparison) or ``normalized``."""
    from knowlm.errors import KnowlmError

    modes = {"strict": _strict, "exact": _exact, "normalized": _normalized}
    if match not in modes:
        raise KnowlmError(f"unknown match mode {match!r}; use strict, exact or normalized")
    return modes[match]


def check_count(count: str) -> str:
    from knowlm.errors import KnowlmError

    if count not in COUNTS:
        raise KnowlmError(f"unknown count mode {count!r}; use set or duplicates")
    return count


def record_task(record: dict) -> str | None:
    """The knowlm task a record is about (``NER`` -> ``ner``), or None when it does not say."""
    task = record.get("task")
    if isinstance(task, str) and task.lower() in TASK_MEASURES:
        return task.lower()
    return None


def tuples(record: dict, norm: Callable[[Any], str], task: str | None = None) -> dict[str, list[tuple]]:
    """The scored tuples of one record, as written (a list per measure; duplicates kept for
    ``count="duplicates"``). The second element of each tuple is its type for per-type tables."""
    out: dict[str, list[tuple]] = {m: [] for m in MEASURES}
    if record.get("parse_error"):
        return out
    for e in record.get("entities") or []:
        if isinstance(e, dict) and e.get("text") is not None and e.get("type") is not None:
            out["entity"].append((norm(e["text"]), norm(e["type"])))
    for r in record.get("relations") or []:
        if not isinstance(r, dict):
            continue
        head, rel, tail = r.get("head", r.get("subject")), r.get("relation", r.get("predicate")), r.get("tail", r.get("object"))
        if head is None or rel is None or tail is None or is_na(rel):
            continue
        if task == "spo":  # the types are part of an SPO answer
            out["relation"].append((norm(head), norm(rel), norm(tail), norm(r.get("head_type") or ""), norm(r.get("tail_type") or "")))
        else:
            out["relation"].append((norm(head), norm(rel), norm(tail)))
    for ev in record.get("events") or []:
        if not isinstance(ev, dict) or ev.get("trigger") is None or ev.get("type") is None:
            continue
        etype = norm(ev["type"])
        out["event_trigger"].append((norm(ev["trigger"]), etype))
        for a in ev.get("arguments") or []:
            if isinstance(a, dict) and a.get("text") is not None and a.get("role") is not None:
                out["event_argument"].append((etype, norm(a["role"]), norm(a["text"])))
    if task is not None:
        for m in MEASURES:
            if m not in TASK_MEASURES[task]:
                out[m] = []
    return out


def prf(tp: int, n_pred: int, n_gold: int) -> dict:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "tp": tp, "n_pred": n_pred, "n_gold": n_gold}


class _Counts:
    def __init__(self, count: str) -> None:
        self.count = count
        self.texts = 0
        self.total = {m: [0, 0, 0] for m in MEASURES}  # tp, n_pred, n_gold
        self.per_type: dict[str, dict[str, list[int]]] = {m: {} for m in MEASURES}

    def add(self, gold: dict[str, list], pred: dict[str, list]) -> None:
        self.texts += 1
        for m in MEASURES:
            gl, pl = gold[m], pred[m]
            if not gl and not pl:
                continue
            if self.count == "set":
                g, p = dict.fromkeys(gl, 1), dict.fromkeys(pl, 1)
                hit = {t: 1 for t in g if t in p}
            else:
                g, p = Counter(gl), Counter(pl)
                hit = g & p
            table = self.per_type[m]
            for bucket, index in ((hit, 0), (p, 1), (g, 2)):
                for t, n in bucket.items():
                    self.total[m][index] += n
                    table.setdefault(t[1], [0, 0, 0])[index] += n

    def report(self, failures: int, measures: Iterable[str] = MEASURES) -> dict:
        out = {}
        for m in measures:
            entry = prf(*self.total[m])
            entry["per_type"] = {k: prf(*v) for k, v in sorted(self.per_type[m].items())}
            entry["parse_failures"] = failures
            out[m] = entry
        return out


def merge_predictions(pred: Iterable[dict]) -> tuple[list[dict], int]:
    """Prediction records sharing an id merged into one (items concatenated in order, every
    parse failure kept in ``parse_errors``; ``parse_error`` only when all of them failed), and
    how many records were merged into an earlier one."""
    merged: dict[str, dict] = {}
    out: list[dict] = []
    extra = 0
    for p in pred:
        if p.get("id") is None:
            out.append(p)
            continue
        key = str(p["id"])
        if key not in merged:
            merged[key] = p
            out.append(p)
            continue
        extra += 1
        first = merged[key]
        if "_members" not in first:
            first["_members"] = [dict(first)]
        first["_members"].append(p)
    for i, p in enumerate(out):
        members = p.pop("_members", None) if isinstance(p, dict) else None
        if members:
            out[i] = _merge(members)
    return out, extra


def _merge(members: list[dict]) -> dict:
    record = {k: v for k, v in members[0].items() if k not in ("entities", "relations", "events", "parse_error", "parse_errors")}
    for name in ("entities", "relations", "events"):
        record[name] = [x for m in members if not m.get("parse_error") for x in (m.get(name) or [])]
    reasons = [r for m in members for r in _failure_reasons(m)]
    if reasons:
        record["parse_errors"] = reasons
    if all(m.get("parse_error") for m in members):
        record["parse_error"] = str(members[0]["parse_error"])
    record["merged_records"] = len(members)
    return record


def _pairs(gold: list[dict], pred: list[dict]) -> tuple[list[tuple[dict, dict]], int, int]:
    """(gold, pred) pairs; counts of gold records with no prediction and predictions with no gold."""
    if gold and all(g.get("id") is not None for g in gold):
        by_id = {str(p["id"]): p for p in pred if p.get("id") is not None}
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


def score(gold_records: Iterable[dict], pred_records: Iterable[dict], match: str = "strict", count: str = "set") -> dict:
    """The ``knowlm eval --report`` object: one entry per measure (counted per ``count``), the
    totals under both counting modes (``by_count``), per-source and per-task scores, and
    parse-failure counts by reason."""
    norm = normalizer(match)
    check_count(count)
    gold = list(gold_records)
    pred, merged = merge_predictions(dict(p) for p in pred_records)
    pairs, missing, extra = _pairs(gold, pred)
    overall = {c: _Counts(c) for c in COUNTS}
    by_source: dict[str, _Counts] = {}
    by_task: dict[str, _Counts] = {}
    reasons: dict[str, int] = {}
    failed_records = 0
    source_failures: dict[str, int] = {}
    task_failures: dict[str, int] = {}
    for g, p in pairs:
        task = record_task(g) or record_task(p)
        gt, pt = tuples(g, norm, task), tuples(p, norm, task)
        for counts in overall.values():
            counts.add(gt, pt)
        source = str(g.get("source") or "default")
        by_source.setdefault(source, _Counts(count)).add(gt, pt)
        if task is not None:
            by_task.setdefault(task, _Counts(count)).add(gt, pt)
        why = _failure_reasons(p)
        for reason in why:
            reasons[reason] = reasons.get(reason, 0) + 1
        if p.get("parse_error"):
            failed_records += 1
            source_failures[source] = source_failures.get(source, 0) + 1
            if task is not None:
                task_failures[task] = task_failures.get(task, 0) + 1
    report = overall[count].report(failed_records)
    report["count"] = count
    report["by_count"] = {c: {m: prf(*overall[c].total[m]) for m in MEASURES} for c in COUNTS}
    report["per_source"] = {s: c.report(source_failures.get(s, 0)) for s, c in sorted(by_source.items())}
    if by_task:
        report["per_task"] = {
            IEPILE_NAMES[t]: {**c.report(task_failures.get(t, 0), TASK_MEASURES[t]), "n_texts": c.texts}
            for t, c in sorted(by_task.items(), key=lambda kv: list(TASK_MEASURES).index(kv[0]))
        }
    report["parse_failures"] = {"total": failed_records, "by_reason": dict(sorted(reasons.items()))}
    report["n_texts"] = len(pairs)
    report["unmatched_predictions"] = extra
    report["missing_predictions"] = missing
    report["merged_predictions"] = merged
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
    """A bar chart of per-type F1 for every measure present (PNG), each bar labelled with its value
    (a type scored 0 shows a "0.0" stub rather than nothing)."""
    from knowlm.utils.atomic import atomic_write
    from knowlm.utils.plotting import labelled_bars, pyplot

    plt = pyplot()  # Chinese type names need the CJK font it selects
    measures = measures_present(report) or ["entity"]
    fig, axes = plt.subplots(len(measures), 1, figsize=(8, 2.8 * len(measures) + 0.6), squeeze=False)
    for ax, m in zip(axes[:, 0], measures):
        per_type = report[m]["per_type"]
        names = list(per_type) or ["(no types)"]
        values = [per_type[n]["f1"] * 100 for n in per_type] or [0.0]
        labelled_bars(ax, names, values, limit=100)
        ax.set_xlabel("type")
        ax.set_ylabel("F1 (%)")
        ax.set_title(f"{m}: micro F1 {report[m]['f1'] * 100:.1f}% (P {report[m]['precision'] * 100:.1f}, "
                     f"R {report[m]['recall'] * 100:.1f})")
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)
