"""The zjunlp instruction projects' files: IEPile (train, test and results layouts) and the
``sample.json`` / InstructIE records of IEPile, DeepKE InstructKGC and KG2Instruction."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from knowlm.errors import KnowlmError
from knowlm.ie.datasets.base import ConvertOptions, ConvertReport, as_dict, as_list, convert_units, json_units, opt_str
from knowlm.ie.iepile import BadLine, infer_task, label_fragment, label_of, prompt_of
from knowlm.ie.records import dedup, detect_lang, entity_key, event_key, new_record, relation_key


def convert_iepile(path: Path, report: ConvertReport, options: ConvertOptions) -> Iterator[dict]:
    """IEPile / OneKE lines. Test and results lines ``{"id", "instruction", "label"[, "output"]}`` give
    the text's whole gold in ``label`` (lines of one text share the id: one record, the label kept
    as written); train lines ``{"task", "source", "instruction", "output"}`` give one schema batch's
    answer each (the batches of one text merge into one record). Lines without ``task`` get it
    from the schema, the label and the instruction's wording; records carry ``task``."""
    from knowlm.ie.parsing import parse_output

    merged: dict[tuple[str, str, str], dict] = {}
    from_train: set[tuple[str, str, str]] = set()

    def one(item: dict, where: str) -> list:
        try:
            prompt = prompt_of(item)
            label = label_of(item)
            task = infer_task(item, prompt, label)
        except BadLine as exc:
            report.skip(str(exc), where)
            return []
        if task == "KG":
            report.skip("unsupported_task", where)
            return []
        text = prompt["input"]
        source = item.get("source") if isinstance(item.get("source"), str) else "iepile"
        if label is not None:
            key = (task, source, str(item.get("id", text)))
            if key not in merged:
                try:
                    fragment = label_fragment(task, label)
                except BadLine as exc:
                    report.skip(str(exc), where)
                    return []
                record = new_record(text, id=str(item.get("id", f"iepile-{len(merged)}")), lang=detect_lang(text), source=source)
                record["task"] = task.lower()
                record.update(fragment)
                merged[key] = record
            return []
        try:
            fragment = parse_output(item.get("output") or "", task.lower(), prompt.get("schema"), style="json", text=text, drop_hallucinated=False)
        except KnowlmError:
            report.skip("bad_schema", where)
            return []
        if fragment.get("parse_error"):
            report.skip(f"output_{fragment['parse_error']}", where)
            return []
        key = (task, source, text)
        from_train.add(key)
        if key not in merged:
            merged[key] = new_record(text, id=f"iepile-{len(merged)}", lang=detect_lang(text), source=source)
            merged[key]["task"] = task.lower()
        for name in ("entities", "relations", "events"):
            merged[key][name].extend(fragment.get(name, []))
        return []

    for _ in convert_units(json_units(path, report), report, one):
        pass
    for key, record in merged.items():
        if key in from_train:
            record["entities"] = dedup(record["entities"], entity_key)
            record["relations"] = dedup(record["relations"], relation_key)
            record["events"] = dedup(record["events"], event_key)
        yield record


def convert_instructie(path: Path, report: ConvertReport, options: ConvertOptions) -> Iterator[dict]:
    """InstructIE ``{"id", "cate", "text"|"input", "relation": [{"head", "head_type", "relation", "tail",
    "tail_type"}]}`` and the ``sample.json`` files of IEPile / DeepKE InstructKGC: ``"entity":
    [{"entity", "entity_type"}]`` (NER), ``"relation"`` (RE, SPO, KG) and ``"event":
    [{"event_trigger", "event_type", "arguments": [{"argument", "role"}]}]`` (EE, EET, EEA)."""

    def one(item: dict, where: str) -> Iterator[dict]:
        text = opt_str(item, "text") or opt_str(item, "input")
        if not text:
            report.skip("no_text", where)
            return
        record = new_record(text, id=str(item.get("id", f"instructie-{report.read}")), source=opt_str(item, "cate") or "instructie")
        for r in as_list(item, "relation"):
            r = as_dict(r, "relation")
            head, relation, tail = opt_str(r, "head"), opt_str(r, "relation"), opt_str(r, "tail")
            if not head or not relation or not tail:
                report.drop("bad_relation", where)
                continue
            rel = {"head": head, "relation": relation, "tail": tail}
            rel.update({k: r[k] for k in ("head_type", "tail_type") if opt_str(r, k)})
            record["relations"].append(rel)
        for e in as_list(item, "entity"):
            e = as_dict(e, "entity")
            span, etype = opt_str(e, "entity"), opt_str(e, "entity_type")
            if not span or not etype:
                report.drop("bad_entity", where)
                continue
            record["entities"].append({"text": span, "type": etype})
        for ev in as_list(item, "event"):
            ev = as_dict(ev, "event")
            etype, trigger = opt_str(ev, "event_type"), opt_str(ev, "event_trigger") or ""
            if not etype:
                report.drop("bad_event", where)
                continue
            arguments = []
            for a in as_list(ev, "arguments"):
                a = as_dict(a, "arguments")
                span, role = opt_str(a, "argument"), opt_str(a, "role")
                if span and role:
                    arguments.append({"text": span, "role": role})
                else:
                    report.drop("bad_argument", where)
            record["events"].append({"trigger": trigger, "type": etype, "arguments": arguments})
        yield record

    yield from convert_units(json_units(path, report), report, one)
