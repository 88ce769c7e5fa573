"""DuEE 1.0 (events with trigger and argument offsets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from knowlm.ie.datasets.base import ConvertOptions, ConvertReport, as_dict, as_list, convert_units, json_units, opt_str
from knowlm.ie.records import new_record


def _offsets(text: str, span: str, start: Any, report: ConvertReport, where: str) -> dict:
    """``{"start", "end"}`` when ``start`` (the dataset's index) really points at ``span``."""
    if isinstance(start, bool) or not isinstance(start, int):
        return {}
    if text[start : start + len(span)] == span:
        return {"start": start, "end": start + len(span)}
    report.drop("offset_mismatch", where)  # the span is kept, its wrong offset is not
    return {}


def convert_duee(path: Path, report: ConvertReport, options: ConvertOptions) -> Iterator[dict]:
    """DuEE 1.0: ``text`` + ``event_list`` of ``{event_type, trigger, trigger_start_index,
    arguments: [{role, argument, argument_start_index, alias}], class}``. Trigger and argument
    offsets are kept as ``start``/``end`` (character offsets, end exclusive)."""

    def one(item: dict, where: str) -> Iterator[dict]:
        text = opt_str(item, "text")
        if not text:
            report.skip("no_text", where)
            return
        record = new_record(text, id=str(item.get("id", f"duee-{report.read}")), lang="zh", source="duee")
        for ev in as_list(item, "event_list"):
            ev = as_dict(ev, "event_list")
            trigger, etype = opt_str(ev, "trigger"), opt_str(ev, "event_type")
            if trigger is None or not etype:
                report.drop("bad_event", where)
                continue
            event = {"trigger": trigger, "type": etype, **_offsets(text, trigger, ev.get("trigger_start_index"), report, where), "arguments": []}
            for arg in as_list(ev, "arguments"):
                arg = as_dict(arg, "arguments")
                span, role = opt_str(arg, "argument"), opt_str(arg, "role")
                if not span or not role:
                    report.drop("bad_argument", where)
                    continue
                event["arguments"].append({"text": span, "role": role, **_offsets(text, span, arg.get("argument_start_index"), report, where)})
            record["events"].append(event)
        yield record

    yield from convert_units(json_units(path, report), report, one)
