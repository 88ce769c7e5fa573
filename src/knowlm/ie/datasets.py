"""Converters from public IE datasets to IE record v1 (``knowlm convert FORMAT IN OUT``).

Each converter reads the original release format, yields records and counts what it skipped
and why in a :class:`ConvertReport` (a malformed line is skipped and counted, never fatal, and
never silently dropped). Relation labels meaning "no relation" (``NA``, ``None``,
``no_relation``, ``Other``) are dropped and counted as ``na_relation``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from knowlm.errors import KnowlmError
from knowlm.ie.records import dedup, detect_lang, entity_key, event_key, is_na, new_record, relation_key
from knowlm.utils.jsonl import JsonlStats, iter_jsonl, open_text


@dataclass
class ConvertReport:
    """What a conversion read, wrote and skipped (by reason)."""

    format: str
    read: int = 0
    written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def summary(self) -> str:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())) or "nothing"
        return f"{self.format}: read {self.read} units, wrote {self.written} records; skipped {skipped}"


def _jsonl(path, report: ConvertReport) -> Iterator[dict]:
    """JSONL lines, or the items of a top-level JSON array (some releases ship one)."""
    path = Path(path)
    with open_text(path) as handle:
        head = handle.read(1 << 16).lstrip()
    if head.startswith("["):
        try:
            data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        except json.JSONDecodeError as exc:
            raise KnowlmError(f"{path}: invalid JSON array ({exc.msg})") from None
        for item in data:
            if isinstance(item, dict):
                yield item
            else:
                report.skip("not_an_object")
        return
    stats = JsonlStats()
    yield from iter_jsonl(path, stats)
    for reason, n in stats.skipped.items():
        report.skip(reason, n)


def _entities_from_tags(tokens: list[str], tags: list[str], joiner: str, report: ConvertReport) -> tuple[str, list[dict]]:
    """BIO/IOB1/BIOES tags over tokens -> (text, entities with character offsets)."""
    starts, pos = [], 0
    for i, tok in enumerate(tokens):
        if i and joiner:
            pos += len(joiner)
        starts.append(pos)
        pos += len(tok)
    text = joiner.join(tokens)
    entities: list[dict] = []
    current: list | None = None  # [type, first token, last token]

    def close() -> None:
        if current is not None:
            s, e = starts[current[1]], starts[current[2]] + len(tokens[current[2]])
            entities.append({"text": text[s:e], "type": current[0], "start": s, "end": e})

    for i, tag in enumerate(tags):
        tag = tag.strip()
        if tag in ("O", "", "o"):
            close()
            current = None
            continue
        prefix, _, etype = tag.partition("-")
        if not etype:
            report.skip("bad_tag")
            close()
            current = None
            continue
        prefix = prefix.upper()
        if prefix in ("B", "S") or current is None or current[0] != etype:
            close()
            current = [etype, i, i]
        else:  # I, E, M continue the open span of the same type
            current[2] = i
        if prefix in ("E", "S"):
            close()
            current = None
    close()
    return text, entities


def _column_sentences(path, report: ConvertReport, docstart: bool) -> Iterator[tuple[list[str], list[str]]]:
    tokens: list[str] = []
    tags: list[str] = []
    with open_text(path) as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line.strip():
                if tokens:
                    yield tokens, tags
                tokens, tags = [], []
                continue
            if docstart and line.startswith("-DOCSTART-"):
                report.skip("docstart")
                continue
            parts = line.split()
            if len(parts) < 2:
                report.skip("bad_line")
                continue
            tokens.append(parts[0])
            tags.append(parts[-1])
    if tokens:
        yield tokens, tags


def convert_conll2003(path, report: ConvertReport) -> Iterator[dict]:
    """CoNLL-2003: ``word POS chunk NER`` per line, blank line between sentences, ``-DOCSTART-`` lines."""
    for n, (tokens, tags) in enumerate(_column_sentences(path, report, docstart=True)):
        report.read += 1
        text, entities = _entities_from_tags(tokens, tags, " ", report)
        record = new_record(text, id=f"conll2003-{n}", lang="en", source="conll2003")
        record["entities"] = entities
        yield record


def convert_peoples_daily(path, report: ConvertReport) -> Iterator[dict]:
    """People's Daily NER: one character and its BIO tag per line, blank line between sentences."""
    for n, (chars, tags) in enumerate(_column_sentences(path, report, docstart=False)):
        report.read += 1
        text, entities = _entities_from_tags(chars, tags, "", report)
        record = new_record(text, id=f"peoples-daily-{n}", lang="zh", source="peoples-daily")
        record["entities"] = entities
        yield record


def convert_scierc(path, report: ConvertReport) -> Iterator[dict]:
    """SciERC: one document per line with ``sentences`` (token lists), ``ner`` and ``relations`` per
    sentence; spans are document-level token indices, end inclusive. One record per sentence."""
    for doc in _jsonl(path, report):
        report.read += 1
        sentences, ner, rels = doc.get("sentences"), doc.get("ner") or [], doc.get("relations") or []
        if not isinstance(sentences, list):
            report.skip("no_sentences")
            continue
        base = 0
        for s, tokens in enumerate(sentences):
            starts, pos = [], 0
            for tok in tokens:
                starts.append(pos)
                pos += len(tok) + 1
            text = " ".join(tokens)

            def span(a: int, b: int) -> tuple[int, int] | None:
                a, b = a - base, b - base
                if not (0 <= a <= b < len(tokens)):
                    return None
                return starts[a], starts[b] + len(tokens[b])

            record = new_record(text, id=f"{doc.get('doc_key', report.read)}-{s}", lang="en", source="scierc")
            types: dict[tuple[int, int], str] = {}
            for item in ner[s] if s < len(ner) else []:
                off = span(item[0], item[1]) if len(item) >= 3 else None
                if off is None:
                    report.skip("bad_span")
                    continue
                types[(item[0], item[1])] = item[2]
                record["entities"].append({"text": text[off[0] : off[1]], "type": item[2], "start": off[0], "end": off[1]})
            for item in rels[s] if s < len(rels) else []:
                if len(item) < 5:
                    report.skip("bad_relation")
                    continue
                h, t = span(item[0], item[1]), span(item[2], item[3])
                if h is None or t is None:
                    report.skip("bad_span")
                    continue
                rel = {"head": text[h[0] : h[1]], "relation": item[4], "tail": text[t[0] : t[1]]}
                if (item[0], item[1]) in types:
                    rel["head_type"] = types[(item[0], item[1])]
                if (item[2], item[3]) in types:
                    rel["tail_type"] = types[(item[2], item[3])]
                record["relations"].append(rel)
            base += len(tokens)
            yield record


def convert_nyt11(path, report: ConvertReport) -> Iterator[dict]:
    """NYT11 (CoType JSON lines): ``sentText``, ``entityMentions`` [{start, label, text}],
    ``relationMentions`` [{em1Text, em2Text, label}] with ``None`` for no relation."""
    for n, item in enumerate(_jsonl(path, report)):
        report.read += 1
        text = item.get("sentText")
        if not isinstance(text, str):
            report.skip("no_sentText")
            continue
        text = text.strip().strip('"').strip()
        record = new_record(text, id=f"nyt11-{item.get('articleId', '')}-{item.get('sentId', n)}", lang="en", source="nyt11")
        types: dict[str, str] = {}
        for m in item.get("entityMentions") or []:
            mention, label = m.get("text"), m.get("label")
            if not isinstance(mention, str) or not isinstance(label, str):
                report.skip("bad_mention")
                continue
            index = text.find(mention)
            if index < 0:
                report.skip("mention_not_in_text")
                continue
            types[mention] = label
            record["entities"].append({"text": mention, "type": label, "start": index, "end": index + len(mention)})
        for r in item.get("relationMentions") or []:
            label = r.get("label")
            if not isinstance(label, str) or not r.get("em1Text") or not r.get("em2Text"):
                report.skip("bad_relation")
                continue
            if is_na(label):
                report.skip("na_relation")
                continue
            rel = {"head": r["em1Text"], "relation": label, "tail": r["em2Text"]}
            if r["em1Text"] in types:
                rel["head_type"] = types[r["em1Text"]]
            if r["em2Text"] in types:
                rel["tail_type"] = types[r["em2Text"]]
            record["relations"].append(rel)
        record["entities"] = dedup(record["entities"], entity_key)
        record["relations"] = dedup(record["relations"], relation_key)
        yield record


_LABEL = re.compile(r"^(?P<rel>.+?)\((?P<a>e[12]),\s*(?P<b>e[12])\)$")


def _untag(sentence: str) -> tuple[str, dict[str, tuple[int, int]]]:
    """Remove ``<e1>..</e1>`` / ``<e2>..</e2>`` tags and extra spaces; spans of e1 and e2 in the result."""
    out = ""
    spans: dict[str, list[int]] = {}
    after_open = False
    for segment in re.split(r"(</?e[12]>)", sentence):
        tag = re.fullmatch(r"<(/?)(e[12])>", segment)
        if tag:
            if tag.group(1):  # closing tag: the span ends at the last non-space character
                out = out.rstrip()
                spans.setdefault(tag.group(2), [len(out), len(out)])[1] = len(out)
            else:
                if out and not out.endswith(" "):
                    out += " "
                spans[tag.group(2)] = [len(out), len(out)]
                after_open = True
            continue
        segment = re.sub(r"\s+", " ", segment)
        if after_open or not out or out.endswith(" "):
            segment = segment.lstrip()
        after_open = False
        out += segment
    return out.rstrip(), {k: (v[0], v[1]) for k, v in spans.items()}


def convert_kbp37(path, report: ConvertReport) -> Iterator[dict]:
    """kbp37: blocks of ``id<TAB>"sentence with <e1>..</e1> and <e2>..</e2>"``, a label line such as
    ``per:employee_of(e1,e2)`` or ``no_relation``, then a blank line."""
    with open_text(path) as handle:
        lines = [line.rstrip("\n") for line in handle]
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        first = lines[i]
        label = lines[i + 1].strip() if i + 1 < len(lines) else ""
        i += 2
        while i < len(lines) and lines[i].strip() and not re.match(r"^\d+\t", lines[i]):
            i += 1  # a "Comment:" line (SemEval-style files) or other extra line
        report.read += 1
        sid, _, sentence = first.partition("\t")
        sentence = sentence.strip().strip('"').strip()
        if not sentence or "<e1>" not in sentence or "<e2>" not in sentence:
            report.skip("no_entity_tags")
            continue
        text, spans = _untag(sentence)
        if "e1" not in spans or "e2" not in spans:
            report.skip("no_entity_tags")
            continue
        e1 = text[spans["e1"][0] : spans["e1"][1]]
        e2 = text[spans["e2"][0] : spans["e2"][1]]
        record = new_record(text, id=f"kbp37-{sid.strip()}", lang="en", source="kbp37")
        if is_na(label) or label.lower().startswith("no_relation"):
            report.skip("na_relation")
            yield record
            continue
        m = _LABEL.match(label)
        if not m:
            report.skip("bad_label")
            continue
        head, tail = (e1, e2) if m.group("a") == "e1" else (e2, e1)
        record["relations"].append({"head": head, "relation": m.group("rel"), "tail": tail})
        yield record


def _surface(name: str, sentence: str) -> str | None:
    """How an entity name (GIDS writes ``james_smith``) appears in the sentence."""
    for candidate in (name, name.replace("_", " "), name.replace(" ", "_")):
        index = sentence.lower().find(candidate.lower())
        if index >= 0:
            return sentence[index : index + len(candidate)]
    return None


def _relation_name(label: str) -> str:
    """``/people/person/place_of_birth`` -> ``place_of_birth`` (the last path segment)."""
    return label.rstrip("/").split("/")[-1].split(".")[-1] or label


def convert_gids(path, report: ConvertReport) -> Iterator[dict]:
    """GIDS (Google-IISc distant supervision) JSON lines ``{"sub", "obj", "sent": [...], "rel"}``
    with Freebase-style relation paths (or ``NA``); one record per sentence. The OpenNRE form
    ``{"text", "relation", "head": {"word"}, "tail": {"word"}}`` is read too."""
    for n, bag in enumerate(_jsonl(path, report)):
        report.read += 1
        if "text" in bag and "head" in bag:  # OpenNRE layout
            sub, obj = (bag.get("head") or {}).get("word"), (bag.get("tail") or {}).get("word")
            sents, rel = [bag.get("text")], bag.get("relation")
        else:
            sub, obj, sents, rel = bag.get("sub"), bag.get("obj"), bag.get("sent"), bag.get("rel")
        if isinstance(sents, str):
            sents = [sents]
        if isinstance(rel, list):
            rel = rel[0] if rel else "NA"
        if not isinstance(sub, str) or not isinstance(obj, str) or not isinstance(sents, list) or not isinstance(rel, str):
            report.skip("bad_bag")
            continue
        for k, sentence in enumerate(sents):
            if not isinstance(sentence, str) or not sentence.strip():
                report.skip("empty_sentence")
                continue
            record = new_record(sentence, id=f"gids-{n}-{k}", lang="en", source="gids")
            if is_na(rel):
                report.skip("na_relation")
                yield record
                continue
            head, tail = _surface(sub, sentence), _surface(obj, sentence)
            if head is None or tail is None:
                report.skip("entity_not_in_sentence")
                continue
            record["relations"].append({"head": head, "relation": _relation_name(rel), "tail": tail})
            yield record


def _value(obj) -> str | None:
    if isinstance(obj, dict):
        obj = obj.get("@value")
    return obj if isinstance(obj, str) else None


def convert_duie(path, report: ConvertReport) -> Iterator[dict]:
    """DuIE 2.0: ``text`` + ``spo_list`` of ``{subject, subject_type, predicate, object: {"@value", slot...},
    object_type: {"@value", slot...}}``. Extra slots (e.g. ``inWork``) become ``predicate_slot`` relations."""
    for n, item in enumerate(_jsonl(path, report)):
        report.read += 1
        text = item.get("text")
        if not isinstance(text, str) or not text:
            report.skip("no_text")
            continue
        record = new_record(text, id=str(item.get("id", f"duie-{n}")), lang="zh", source="duie")
        for spo in item.get("spo_list") or []:
            subject, predicate = spo.get("subject"), spo.get("predicate")
            objects, obj_types = spo.get("object"), spo.get("object_type")
            main = _value(objects)
            if not isinstance(subject, str) or not isinstance(predicate, str) or main is None:
                report.skip("bad_spo")
                continue
            subject_type = spo.get("subject_type") if isinstance(spo.get("subject_type"), str) else ""
            slots = objects if isinstance(objects, dict) else {"@value": objects}
            types = obj_types if isinstance(obj_types, dict) else {"@value": obj_types}
            for slot, value in slots.items():
                if not isinstance(value, str):
                    continue
                relation = predicate if slot == "@value" else f"{predicate}_{slot}"
                record["relations"].append(
                    {"head": subject, "relation": relation, "tail": value, "head_type": subject_type, "tail_type": str(types.get(slot, ""))}
                )
            for mention, etype in [(subject, subject_type)] + [(v, types.get(k, "")) for k, v in slots.items()]:
                index = text.find(mention) if isinstance(mention, str) else -1
                if index >= 0 and etype:
                    record["entities"].append({"text": mention, "type": str(etype), "start": index, "end": index + len(mention)})
        record["entities"] = dedup(record["entities"], entity_key)
        record["relations"] = dedup(record["relations"], relation_key)
        yield record


def convert_duee(path, report: ConvertReport) -> Iterator[dict]:
    """DuEE 1.0: ``text`` + ``event_list`` of ``{event_type, trigger, trigger_start_index,
    arguments: [{role, argument, argument_start_index}]}``."""
    for n, item in enumerate(_jsonl(path, report)):
        report.read += 1
        text = item.get("text")
        if not isinstance(text, str) or not text:
            report.skip("no_text")
            continue
        record = new_record(text, id=str(item.get("id", f"duee-{n}")), lang="zh", source="duee")
        for ev in item.get("event_list") or []:
            if not isinstance(ev.get("trigger"), str) or not isinstance(ev.get("event_type"), str):
                report.skip("bad_event")
                continue
            event = {"trigger": ev["trigger"], "type": ev["event_type"], "arguments": []}
            start = ev.get("trigger_start_index")
            if isinstance(start, int) and text[start : start + len(ev["trigger"])] == ev["trigger"]:
                event["start"], event["end"] = start, start + len(ev["trigger"])
            for arg in ev.get("arguments") or []:
                if isinstance(arg.get("argument"), str) and isinstance(arg.get("role"), str):
                    event["arguments"].append({"text": arg["argument"], "role": arg["role"]})
                else:
                    report.skip("bad_argument")
            record["events"].append(event)
        yield record


def convert_iepile(path, report: ConvertReport) -> Iterator[dict]:
    """IEPile / OneKE instruction lines ``{"task": "NER"|"RE"|"EE", "source", "instruction": "<JSON>",
    "output": "<JSON>"}``; prompts about the same text (several schema batches) merge into one record."""
    from knowlm.ie.parsing import parse_output

    merged: dict[tuple[str, str], dict] = {}
    for item in _jsonl(path, report):
        report.read += 1
        task = str(item.get("task", "")).lower()
        if task not in ("ner", "re", "ee"):
            report.skip("unknown_task")
            continue
        try:
            prompt = json.loads(item["instruction"]) if isinstance(item.get("instruction"), str) else item.get("instruction")
        except json.JSONDecodeError:
            report.skip("bad_instruction_json")
            continue
        if not isinstance(prompt, dict) or not isinstance(prompt.get("input"), str) or not prompt.get("schema"):
            report.skip("bad_instruction_json")
            continue
        text = prompt["input"]
        try:
            fragment = parse_output(item.get("output") or "", task, prompt["schema"], style="json", text=text, drop_hallucinated=False)
        except KnowlmError:
            report.skip("bad_schema")
            continue
        if fragment.get("parse_error"):
            report.skip(f"output_{fragment['parse_error']}")
            continue
        key = (str(item.get("source", "iepile")), text)
        if key not in merged:
            merged[key] = new_record(text, id=f"iepile-{len(merged)}", lang=detect_lang(text), source=key[0])
        record = merged[key]
        for name, values in fragment.items():
            if name in ("entities", "relations", "events"):
                record[name].extend(values)
    for record in merged.values():
        record["entities"] = dedup(record["entities"], entity_key)
        record["relations"] = dedup(record["relations"], relation_key)
        record["events"] = dedup(record["events"], event_key)
        yield record


def convert_instructie(path, report: ConvertReport) -> Iterator[dict]:
    """InstructIE: ``{"id", "cate", "text", "relation": [{"head", "head_type", "relation", "tail", "tail_type"}]}``."""
    for n, item in enumerate(_jsonl(path, report)):
        report.read += 1
        text = item.get("text") or item.get("input")
        if not isinstance(text, str):
            report.skip("no_text")
            continue
        record = new_record(text, id=str(item.get("id", f"instructie-{n}")), source=item.get("cate") or "instructie")
        for r in item.get("relation") or []:
            if all(isinstance(r.get(k), str) for k in ("head", "relation", "tail")):
                record["relations"].append({k: r[k] for k in ("head", "relation", "tail", "head_type", "tail_type") if r.get(k)})
            else:
                report.skip("bad_relation")
        yield record


CONVERTERS: dict[str, Callable[[Path, ConvertReport], Iterable[dict]]] = {
    "conll2003": convert_conll2003,
    "peoples-daily": convert_peoples_daily,
    "scierc": convert_scierc,
    "nyt11": convert_nyt11,
    "kbp37": convert_kbp37,
    "gids": convert_gids,
    "duie": convert_duie,
    "duee": convert_duee,
    "iepile": convert_iepile,
    "instructie": convert_instructie,
}


def convert(fmt: str, path, report: ConvertReport | None = None) -> tuple[list[dict], ConvertReport]:
    """All records of one dataset file in IE record v1, and the report of what was skipped."""
    if fmt not in CONVERTERS:
        raise KnowlmError(f"unknown format {fmt!r}; choose one of: {', '.join(CONVERTERS)}, sft")
    path = Path(path)
    if not path.is_file():
        raise KnowlmError(f"input file not found: {path}")
    report = report or ConvertReport(fmt)
    records = list(CONVERTERS[fmt](path, report))
    report.written = len(records)
    return records, report


def schema_from_records(records: Iterable[dict], task: str) -> list:
    """Every type / relation / event type (with its roles) seen in ``records``, sorted: a
    deterministic default schema for SFT conversion and evaluation."""
    if task == "ner":
        return sorted({e["type"] for r in records for e in r.get("entities") or []})
    if task == "re":
        return sorted({x["relation"] for r in records for x in r.get("relations") or [] if not is_na(x["relation"])})
    roles: dict[str, set[str]] = {}
    for r in records:
        for e in r.get("events") or []:
            roles.setdefault(e["type"], set()).update(a["role"] for a in e.get("arguments") or [])
    return [{"event_type": k, "arguments": sorted(v)} for k, v in sorted(roles.items())]
