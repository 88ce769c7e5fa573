"""Relation datasets: SciERC, NYT11, GIDS (three layouts) and DuIE 2.0."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from knowlm.ie.datasets.base import (
    BadField,
    ConvertOptions,
    ConvertReport,
    as_dict,
    as_list,
    convert_units,
    json_units,
    opt_str,
)
from knowlm.ie.records import dedup, entity_key, is_na, new_record, relation_key

# RESIDE's preproc/gids_relation2id.json: the ids its GIDS bags (`"rel": [4]`) use.
RESIDE_GIDS_RELATIONS = {
    0: "NA",
    1: "/people/person/education./education/education/institution",
    2: "/people/person/education./education/education/degrees",
    3: "/people/person/place_of_birth",
    4: "/people/deceased_person/place_of_death",
}


def convert_scierc(path: Path, report: ConvertReport, options: ConvertOptions) -> Iterator[dict]:
    """SciERC: one document per line with ``sentences`` (token lists), ``ner`` and ``relations`` per
    sentence; spans are document-level token indices, end inclusive. One record per sentence."""

    def one(doc: dict, where: str) -> Iterator[dict]:
        sentences, ner, rels = as_list(doc, "sentences"), as_list(doc, "ner"), as_list(doc, "relations")
        if not sentences:
            report.skip("no_sentences", where)
            return
        base = 0
        for s, tokens in enumerate(sentences):
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise BadField("sentences")
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
                    report.drop("bad_span", where)
                    continue
                types[(item[0], item[1])] = item[2]
                record["entities"].append({"text": text[off[0] : off[1]], "type": item[2], "start": off[0], "end": off[1]})
            for item in rels[s] if s < len(rels) else []:
                if len(item) < 5:
                    report.drop("bad_relation", where)
                    continue
                h, t = span(item[0], item[1]), span(item[2], item[3])
                if h is None or t is None:
                    report.drop("bad_span", where)
                    continue
                rel = {"head": text[h[0] : h[1]], "relation": item[4], "tail": text[t[0] : t[1]]}
                if (item[0], item[1]) in types:
                    rel["head_type"] = types[(item[0], item[1])]
                if (item[2], item[3]) in types:
                    rel["tail_type"] = types[(item[2], item[3])]
                record["relations"].append(rel)
            base += len(tokens)
            yield record

    yield from convert_units(json_units(path, report), report, one)


def convert_nyt11(path: Path, report: ConvertReport, options: ConvertOptions) -> Iterator[dict]:
    """NYT11 (CoType JSON lines): ``sentText``, ``entityMentions`` [{start, label, text}],
    ``relationMentions`` [{em1Text, em2Text, label}] with ``None`` for no relation."""

    def one(item: dict, where: str) -> Iterator[dict]:
        text = opt_str(item, "sentText")
        if text is None:
            report.skip("no_sentText", where)
            return
        text = text.strip().strip('"').strip()
        record = new_record(text, id=f"nyt11-{item.get('articleId', '')}-{item.get('sentId', report.read)}", lang="en", source="nyt11")
        types: dict[str, str] = {}
        for m in as_list(item, "entityMentions"):
            mention, label = opt_str(as_dict(m, "entityMentions"), "text"), opt_str(m, "label")
            if not mention or not label:
                report.drop("bad_mention", where)
                continue
            index = text.find(mention)
            if index < 0:
                report.drop("mention_not_in_text", where)
                continue
            types[mention] = label
            record["entities"].append({"text": mention, "type": label, "start": index, "end": index + len(mention)})
        for r in as_list(item, "relationMentions"):
            r = as_dict(r, "relationMentions")
            label, head, tail = opt_str(r, "label"), opt_str(r, "em1Text"), opt_str(r, "em2Text")
            if not label or not head or not tail:
                report.drop("bad_relation", where)
                continue
            if is_na(label):
                report.drop("na_relation", where)
                continue
            rel = {"head": head, "relation": label, "tail": tail}
            if head in types:
                rel["head_type"] = types[head]
            if tail in types:
                rel["tail_type"] = types[tail]
            record["relations"].append(rel)
        record["entities"] = dedup(record["entities"], entity_key)
        record["relations"] = dedup(record["relations"], relation_key)
        yield record

    yield from convert_units(json_units(path, report), report, one)


# ---------------------------------------------------------------- GIDS


def _surface(name: str, sentence: str) -> str | None:
    """How an entity name (GIDS writes ``james_smith``) appears in the sentence."""
    for candidate in (name, name.replace("_", " "), name.replace(" ", "_")):
        index = sentence.lower().find(candidate.lower())
        if index >= 0:
            return sentence[index : index + len(candidate)]
    return None


def _span_text(text: str, entity: dict, name: str) -> str | None:
    """An OpenNRE entity's mention: its character ``pos`` when that spells the name, else found by name."""
    pos = entity.get("pos")
    if isinstance(pos, list) and len(pos) == 2 and all(isinstance(p, int) for p in pos) and 0 <= pos[0] < pos[1] <= len(text):
        mention = text[pos[0] : pos[1]]
        if mention.lower().replace("_", " ") == name.lower().replace("_", " "):
            return mention
    return _surface(name, text)


def _token_pos(tokens: list[str], pos: Any) -> list[int] | None:
    if not (isinstance(pos, list) and len(pos) == 2 and all(isinstance(p, int) for p in pos) and 0 <= pos[0] < pos[1] <= len(tokens)):
        return None
    start = sum(len(tok) + 1 for tok in tokens[: pos[0]])
    return [start, start + len(" ".join(tokens[pos[0] : pos[1]]))]


def _labels(rel: Any, options: ConvertOptions) -> list[str]:
    """A bag's relation labels: a string, an id, or a list of them (RESIDE test bags hold several)."""
    ids = options.relation_ids or RESIDE_GIDS_RELATIONS
    out = []
    for r in rel if isinstance(rel, list) else [rel]:
        if isinstance(r, bool) or not isinstance(r, (str, int)):
            raise BadField("rel")
        if isinstance(r, int):
            if r not in ids:
                raise BadField("rel")
            r = ids[r]
        out.append(r)
    return out or ["NA"]


def convert_gids(path: Path, report: ConvertReport, options: ConvertOptions) -> Iterator[dict]:
    """GIDS (Google-IISc distant supervision), one record per sentence, in any of its layouts:

    * OpenNRE (``gids_train.txt``): ``{"text", "relation", "h": {"id", "name", "pos"}, "t": {...}}``
      with character offsets (``"token"`` lists with token offsets are read too);
    * RESIDE bags (``gids_train_bags.json``): ``{"sub", "obj", "sub_id", "obj_id",
      "sents": [{"sent", "rsent", ...}], "rel": [id, ...]}`` with RESIDE's relation ids
      (``--relation-map`` with another ``rel2id`` table decodes other ids);
    * RESIDE raw lines: ``{"sub", "obj", "sent", "rel": "/people/..."}``.
    """

    def one(bag: dict, where: str) -> Iterator[dict]:
        n = report.read
        if isinstance(bag.get("h") or bag.get("head"), dict):  # OpenNRE
            h, t = as_dict(bag.get("h") or bag.get("head"), "h"), as_dict(bag.get("t") or bag.get("tail"), "t")
            tokens = bag.get("token")
            text = " ".join(tokens) if isinstance(tokens, list) and all(isinstance(x, str) for x in tokens) else opt_str(bag, "text")
            if not text:
                report.skip("no_text", where)
                return
            if isinstance(tokens, list):  # token offsets [start, end) -> character offsets
                h, t = {**h, "pos": _token_pos(tokens, h.get("pos"))}, {**t, "pos": _token_pos(tokens, t.get("pos"))}
            sub = h.get("name", h.get("word"))
            obj = t.get("name", t.get("word"))
            if not isinstance(sub, str) or not isinstance(obj, str):
                raise BadField("h/t name")
            heads = [(text, _span_text(text, h, sub), _span_text(text, t, obj))]
            labels = _labels(bag.get("relation", "NA"), options)
        else:  # RESIDE bag or raw line
            sub, obj = opt_str(bag, "sub"), opt_str(bag, "obj")
            if not sub or not obj:
                raise BadField("sub/obj")
            raw = bag["sents"] if "sents" in bag else bag.get("sent")
            sents = raw if isinstance(raw, list) else [raw]
            heads = []
            for s in sents:
                sentence = s.get("sent") if isinstance(s, dict) else s
                if not isinstance(sentence, str):
                    raise BadField("sents")
                heads.append((sentence, _surface(sub, sentence), _surface(obj, sentence)))
            labels = _labels(bag.get("rel", "NA"), options)
        relations = [label for label in dict.fromkeys(labels) if not is_na(label)]
        for k, (sentence, head, tail) in enumerate(heads):
            if not sentence.strip():
                report.skip("empty_sentence", where)
                continue
            record = new_record(sentence, id=f"gids-{n}-{k}", lang="en", source="gids")
            if not relations:
                report.negatives += 1
                yield record
                continue
            if head is None or tail is None:
                report.skip("entity_not_in_sentence", where)
                continue
            record["relations"] = [{"head": head, "relation": label, "tail": tail} for label in relations]
            yield record

    yield from convert_units(json_units(path, report), report, one)


# ---------------------------------------------------------------- DuIE


def _value(obj: Any) -> str | None:
    if isinstance(obj, dict):
        obj = obj.get("@value")
    return obj if isinstance(obj, str) else None


def convert_duie(path: Path, report: ConvertReport, options: ConvertOptions) -> Iterator[dict]:
    """DuIE 2.0: ``text`` + ``spo_list`` of ``{subject, subject_type, predicate, object: {"@value", slot...},
    object_type: {"@value", slot...}}``. Extra slots (e.g. ``inWork``) become ``predicate_slot`` relations."""

    def one(item: dict, where: str) -> Iterator[dict]:
        text = opt_str(item, "text")
        if not text:
            report.skip("no_text", where)
            return
        record = new_record(text, id=str(item.get("id", f"duie-{report.read}")), lang="zh", source="duie")
        for spo in as_list(item, "spo_list"):
            spo = as_dict(spo, "spo_list")
            subject, predicate = opt_str(spo, "subject"), opt_str(spo, "predicate")
            objects, obj_types = spo.get("object"), spo.get("object_type")
            main = _value(objects)
            if not subject or not predicate or main is None:
                report.drop("bad_spo", where)
                continue
            subject_type = opt_str(spo, "subject_type") or ""
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

    yield from convert_units(json_units(path, report), report, one)
