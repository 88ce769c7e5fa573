"""Tagged-text formats: CoNLL-2003 and People's Daily (a token and its tag per line) and kbp37
(``<e1>``/``<e2>`` tags in the sentence, the label on the next line)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from knowlm.ie.datasets.base import ConvertOptions, ConvertReport
from knowlm.ie.records import is_na, new_record
from knowlm.utils.jsonl import open_text


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
            report.drop("bad_tag")
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


def _column_sentences(path: Path, report: ConvertReport, docstart: bool) -> Iterator[tuple[str, list[str], list[str]]]:
    """``(where, tokens, tags)`` per blank-line-separated sentence; ``where`` is its first line."""
    tokens: list[str] = []
    tags: list[str] = []
    first = 0
    with open_text(path) as handle:
        for lineno, line in enumerate(handle, 1):
            line = line.rstrip("\n")
            if not line.strip():
                if tokens:
                    yield f"{path}:{first}", tokens, tags
                tokens, tags = [], []
                continue
            if docstart and line.startswith("-DOCSTART-"):
                report.skip("docstart", f"{path}:{lineno}")
                continue
            parts = line.split()
            if len(parts) < 2:
                report.drop("bad_line", f"{path}:{lineno}")
                continue
            if not tokens:
                first = lineno
            tokens.append(parts[0])
            tags.append(parts[-1])
    if tokens:
        yield f"{path}:{first}", tokens, tags


def convert_conll2003(path: Path, report: ConvertReport, options: ConvertOptions) -> Iterator[dict]:
    """CoNLL-2003: ``word POS chunk NER`` per line (IOB1 or IOB2), blank line between sentences, ``-DOCSTART-`` lines."""
    for n, (where, tokens, tags) in enumerate(_column_sentences(path, report, docstart=True)):
        report.read += 1
        text, entities = _entities_from_tags(tokens, tags, " ", report)
        record = new_record(text, id=f"conll2003-{n}", lang="en", source="conll2003")
        record["entities"] = entities
        yield record


def convert_peoples_daily(path: Path, report: ConvertReport, options: ConvertOptions) -> Iterator[dict]:
    """People's Daily NER: one character and its BIO tag per line, blank line between sentences."""
    for n, (where, chars, tags) in enumerate(_column_sentences(path, report, docstart=False)):
        report.read += 1
        text, entities = _entities_from_tags(chars, tags, "", report)
        record = new_record(text, id=f"peoples-daily-{n}", lang="zh", source="peoples-daily")
        record["entities"] = entities
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


def convert_kbp37(path: Path, report: ConvertReport, options: ConvertOptions) -> Iterator[dict]:
    """kbp37: blocks of ``id<TAB>"sentence with <e1>..</e1> and <e2>..</e2>"``, a label line such as
    ``per:employee_of(e1,e2)`` or ``no_relation``, then a blank line. A ``no_relation`` sentence
    is written without a relation (a negative example), not skipped."""
    with open_text(path) as handle:
        lines = [line.rstrip("\n") for line in handle]
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        where = f"{path}:{i + 1}"
        first = lines[i]
        label = lines[i + 1].strip() if i + 1 < len(lines) else ""
        i += 2
        while i < len(lines) and lines[i].strip() and not re.match(r"^\d+\t", lines[i]):
            i += 1  # a "Comment:" line (SemEval-style files) or other extra line
        report.read += 1
        sid, _, sentence = first.partition("\t")
        sentence = sentence.strip().strip('"').strip()
        if not sentence or "<e1>" not in sentence or "<e2>" not in sentence:
            report.skip("no_entity_tags", where)
            continue
        text, spans = _untag(sentence)
        if "e1" not in spans or "e2" not in spans:
            report.skip("no_entity_tags", where)
            continue
        e1 = text[spans["e1"][0] : spans["e1"][1]]
        e2 = text[spans["e2"][0] : spans["e2"][1]]
        record = new_record(text, id=f"kbp37-{sid.strip()}", lang="en", source="kbp37")
        if is_na(label) or label.lower().startswith("no_relation"):
            report.negatives += 1
            yield record
            continue
        m = _LABEL.match(label)
        if not m:
            report.skip("bad_label", where)
            continue
        head, tail = (e1, e2) if m.group("a") == "e1" else (e2, e1)
        record["relations"].append({"head": head, "relation": m.group("rel"), "tail": tail})
        yield record
