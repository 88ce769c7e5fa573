"""IEPile's scorer (``ie2instruction/eval_func.py``), reproduced number for number.

:func:`extract` reads an output as eval_func.py's extractors do (strict JSON, values as written),
:class:`Metric` counts as its NERMetric/REMetric/EEMetric do in ``match_mode="normal"``
(duplicates counted, P and R in percent rounded to 2 places, F1 from the rounded P and R), and
:func:`eval_func_scores` writes what ``eval_func.py --task TASK --sort_by source`` writes. The
differences from the shipped script are listed in :mod:`knowlm.ie.iepile`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from knowlm.ie.iepile import Group

SCORED = ("NER", "RE", "EE", "EET", "EEA")  # what eval_func.py can score
NAN = "NAN"


def extract(task: str, output: Any) -> tuple[bool, list]:
    """IEPile's ``get_extracter(task)().extract(output)``: (parsed, tuples as written)."""
    try:
        rst = json.loads(output)
    except (json.JSONDecodeError, TypeError):
        return False, []
    if type(rst) is not dict:
        return False, []
    found: list = []
    for key, values in rst.items():
        if type(key) is not str or type(values) is not list:
            continue
        for value in values:
            if task in ("NER", "EET"):  # NERExtracter.post_process / EETExtracter.post_process4
                if type(value) is str:
                    found.append((value, key))
            elif task == "RE":
                if type(value) is not dict:
                    continue
                head, tail = value.get("subject", ""), value.get("object", "")
                if type(head) is str and type(tail) is str:
                    found.append((head, key, tail))
            elif type(value) is dict:  # EE / EEA
                if task == "EE":
                    trigger = value.get("trigger", "")
                    if type(trigger) is not str:
                        continue
                    arguments = value.get("arguments", {})
                    if not isinstance(arguments, dict):
                        return False, []  # the script stops here (AttributeError); counted as an error
                else:
                    trigger, arguments = "", value
                args = []
                for role, v in arguments.items():
                    for item in v if type(v) is list else [v]:
                        if item != NAN:
                            args.append((item, role))
                found.append((key, trigger, tuple(args)))
    return True, found


def label_tuples(task: str, label: list) -> list:
    """IEPile's ``convert_kg(label, task)``."""
    if task == "NER":
        return [(x["entity"], x["entity_type"]) for x in label]
    if task in ("RE", "KG"):
        return [(x.get("head", ""), x.get("relation", ""), x.get("tail", "")) for x in label]
    if task == "EET":
        return [(x["event_trigger"], x["event_type"]) for x in label]
    trigger = (lambda x: x["event_trigger"]) if task == "EE" else (lambda x: "")
    return [(x["event_type"], trigger(x), tuple((a["argument"], a["role"]) for a in x["arguments"])) for x in label]


def _safe_div(a: float, b: float) -> float:
    return 0.0 if b == 0.0 else round(a / b * 100, 2)


def _safe_div_(a: float, b: float) -> float:
    return 0.0 if b == 0.0 else round(a / b, 2)


class Metric:
    """NERMetric / REMetric (NER, RE, EET) and EEMetric (EE, EEA) in ``match_mode="normal"``."""

    def __init__(self, task: str):
        self.events = task in ("EE", "EEA")
        self.count = self.error = 0
        self.tp = self.pred = self.gold = 0  # NER/RE, or events for EE/EEA
        self.ag_tp = self.ag_pred = self.ag_gold = 0

    @staticmethod
    def _hits(gold: list, pred: list) -> int:
        left, hits = list(gold), 0
        for p in pred:
            if p in left:
                hits += 1
                left.remove(p)
        return hits

    def add(self, gold: list, pred: list) -> None:
        self.count += 1
        if not self.events:
            self.pred += len(pred)
            self.gold += len(gold)
            self.tp += self._hits(gold, pred)
            return
        gold_evt = [(t, trig) for t, trig, _ in gold]
        pred_evt = [(t, trig) for t, trig, _ in pred]
        gold_arg = [(t, name, role) for t, _, args in gold for name, role in args]
        pred_arg = [(t, name, role) for t, _, args in pred for name, role in args]
        self.pred += len(pred_evt)
        self.gold += len(gold_evt)
        self.tp += self._hits(gold_evt, pred_evt)
        self.ag_pred += len(pred_arg)
        self.ag_gold += len(gold_arg)
        self.ag_tp += self._hits(gold_arg, pred_arg)

    def compute(self) -> dict:
        out: dict = {"总样本数": self.count, "错误数": self.error}
        if not self.events:
            p, r = _safe_div(self.tp, self.pred), _safe_div(self.tp, self.gold)
            out.update(P=p, R=r, F1=_safe_div_(2 * p * r, p + r))
            return out
        p, r = _safe_div(self.tp, self.pred), _safe_div(self.tp, self.gold)
        out.update(event_P=p, event_R=r, event_F1=_safe_div_(2 * p * r, p + r))
        p, r = _safe_div(self.ag_tp, self.ag_pred), _safe_div(self.ag_tp, self.ag_gold)
        out.update(argument_P=p, argument_R=r, argument_F1=_safe_div_(2 * p * r, p + r))
        return out


def eval_func_scores(groups: Iterable[Group]) -> dict:
    """Per task, what ``eval_func.py --task TASK --sort_by source`` writes: ``{"total": {...}, source: {...}}``."""
    totals: dict[str, Metric] = {}
    per_source: dict[str, dict[str, Metric]] = {}
    for group in groups:
        if group.task not in SCORED:
            continue
        total = totals.setdefault(group.task, Metric(group.task))
        by_source = per_source.setdefault(group.task, {}).setdefault(group.source, Metric(group.task))
        preds: list = []
        for output, _, _ in group.lines:
            ok, found = extract(group.task, output)
            if not ok:
                total.error += 1
                by_source.error += 1
            preds.extend(found)
        gold = label_tuples(group.task, group.label or [])
        total.add(gold, preds)
        by_source.add(gold, preds)
    return {
        task: {"total": totals[task].compute(), **{s: m.compute() for s, m in sorted(per_source[task].items())}}
        for task in SCORED
        if task in totals
    }
