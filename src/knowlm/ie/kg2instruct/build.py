"""KG2Instruction by distant supervision: corpus + knowledge graph -> gold IE records and
relation-extraction (and NER) instructions.

documents -> sentences (the corpus pipeline's splitter) -> alias mentions -> entity linking
-> every graph relation between two linked mentions of a sentence -> rule filters -> records
(per sentence and/or per document, split by document into train/dev/test; held-out documents
nowhere) -> optional passages written from the graph's other triples -> instructions via the
shared prompt builder.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from knowlm.errors import KnowlmError
from knowlm.ie.kg2instruct.graph import KnowledgeGraph, RelationSchema, load_relation_map
from knowlm.ie.kg2instruct.holdout import held_out_triples, read_holdout
from knowlm.ie.kg2instruct.linking import Linked, LinkStats, link_document
from knowlm.ie.kg2instruct.mentions import MentionFinder
from knowlm.ie.kg2instruct.records import ENTITIES, NAMES, Fact, LabelledDocument, LabelledUnit, Span, make_record
from knowlm.ie.kg2instruct.triples import RelationRule, Triple, TripleFilter, candidate_triples
from knowlm.utils.atomic import atomic_dir
from knowlm.utils.jsonl import JsonlStats, iter_jsonl, open_text, write_jsonl

SPLITS = ("train", "dev", "test")
RECORD_UNITS = ("unit", "document")
TASKS = ("re", "ner")
# What a run writes into its output directory (replaced by a run with --overwrite; other files stay).
OUTPUT_FILES = ("records.jsonl", *(f"{name}.jsonl" for name in SPLITS), "texts.jsonl", "schema.json", "stats.json", "report.md", "stats.png")


@dataclass
class KG2InstructConfig:
    lang: str = "auto"  # auto: detected per document
    unit: str = "sentence"  # "sentence": pairs within a sentence; "document": anywhere in the document
    ignore_case: bool = True
    min_confidence: float = 0.0
    rules: dict[str, RelationRule] = field(default_factory=dict)
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    styles: tuple[str, ...] = ("json", "knowlm")
    split_num: int | None = None  # schema items per instruction (default for RE: 4)
    neg_ratio: float = 1.0  # negative relation types per positive one in training instructions
    seed: int = 0
    keep_empty: bool = False  # also keep sentences with linked entities but no triple
    records: tuple[str, ...] = ("unit",)  # "unit": a record per sentence (or document); "document": per document too
    names: str = "mention"  # "mention": as written; "canonical": the graph's name where the text contains it
    entities: str = "mentions"  # "mentions": every linked mention; "arguments": heads and tails of kept triples
    tasks: tuple[str, ...] = ("re",)  # instruction tasks: re, ner
    wording: str = "full"  # prompt wording: full (IEPile) or compact (small models)
    augment: int = 0  # passages written from graph triples with templates (train split only)
    augment_swap: float = 0.0  # share of augmented sentences stating another same-type entity's facts
    hard_negatives: bool = False  # negatives first from relations whose head and tail types overlap a positive's
    substitute: int = 0  # variants of each training document with its entities replaced by same-type entities

    def __post_init__(self) -> None:
        from knowlm.ie.prompts import check_wording

        if self.unit not in ("sentence", "document"):
            raise KnowlmError(f"unit must be sentence or document, got {self.unit!r}")
        for name, values, allowed in (("records", self.records, RECORD_UNITS), ("tasks", self.tasks, TASKS)):
            if not values or any(v not in allowed for v in values):
                raise KnowlmError(f"{name} takes one or more of {', '.join(allowed)}, got {','.join(values) or 'nothing'}")
        if self.names not in NAMES:
            raise KnowlmError(f"names must be one of {', '.join(NAMES)}, got {self.names!r}")
        if self.entities not in ENTITIES:
            raise KnowlmError(f"entities must be one of {', '.join(ENTITIES)}, got {self.entities!r}")
        check_wording(self.wording)
        if self.augment < 0:
            raise KnowlmError("augment must be >= 0")
        if self.substitute < 0:
            raise KnowlmError("substitute must be >= 0")
        if not 0.0 <= self.augment_swap <= 1.0:
            raise KnowlmError("augment_swap must be between 0 and 1")
        if len(self.split_ratios) != 3 or any(r < 0 for r in self.split_ratios) or abs(sum(self.split_ratios) - 1) > 1e-6:
            raise KnowlmError("split ratios must be three non-negative numbers summing to 1, e.g. 0.8,0.1,0.1")
        if self.neg_ratio < 0:
            raise KnowlmError("neg_ratio must be >= 0")


def read_corpus(paths: Iterable[str | Path], stats: Counter) -> Iterator[dict]:
    """Documents ``{"id", "text"}`` from JSONL (``text``, optional ``id``) or .txt (a document per line)."""
    for path in paths:
        path = Path(path)
        if path.name.endswith((".txt", ".txt.gz")):
            with open_text(path) as handle:
                for lineno, line in enumerate(handle, 1):
                    if line.strip():
                        yield {"id": f"{path.stem}-{lineno}", "text": line.rstrip("\n")}
            continue
        read = JsonlStats()
        for index, row in enumerate(iter_jsonl(path, read)):
            text = row.get("text")
            if not isinstance(text, str) or not text.strip():
                stats["skipped_no_text"] += 1
                continue
            yield {"id": str(row.get("id", f"{path.stem}-{index}")), "text": text, "lang": row.get("lang")}
        for reason, count in read.skipped.items():
            stats[f"skipped_{reason}"] += count


class DistantLabeller:
    """Labels one document at a time; keeps running counts for the statistics report."""

    def __init__(self, graph: KnowledgeGraph, config: KG2InstructConfig, schema: RelationSchema | None = None):
        self.graph = graph
        self.config = config
        self.finder = MentionFinder(graph, ignore_case=config.ignore_case)
        self.filter = TripleFilter(schema=schema, rules=config.rules, min_confidence=config.min_confidence)
        self.link_stats = LinkStats()
        self.counts: Counter = Counter()

    def label(self, doc: dict) -> LabelledDocument:
        from knowlm.data.sentences import detect_lang, split_sentences

        text = doc["text"]
        lang = self.config.lang if self.config.lang in ("zh", "en") else doc.get("lang") or detect_lang(text)
        units = split_sentences(text, lang=lang) if self.config.unit == "sentence" else [text]
        offsets, position = [], 0
        for unit in units:
            offsets.append(position)
            position += len(unit)
        mentions = [self.finder.find(unit) for unit in units]
        linked = link_document(self.graph, mentions, self.link_stats)
        self.counts["documents"] += 1
        self.counts["sentences"] += len(units)
        self.counts["mentions"] += sum(len(m) for m in mentions)
        by_unit: dict[int, list[Linked]] = defaultdict(list)
        for item in linked:
            by_unit[item.sentence].append(item)
        labelled, named, ids = [], [], []
        for index, unit_links in sorted(by_unit.items()):
            candidates = candidate_triples(self.graph, unit_links)
            self.counts["candidate_triples"] += len(candidates)
            kept = self.filter.apply(self.graph, candidates, units[index])
            self.counts["triples"] += len(kept)
            named += [self._names(t) for t in kept]
            ids += [(t.head.entity, t.relation, t.tail.entity) for t in kept]
            # every sentence with a linked mention is kept (substitution renames them all); records()
            # decides which ones become records
            spans = {id(item): Span(item.entity, item.mention.text, item.mention.start) for item in unit_links}
            facts = [Fact(spans[id(t.head)], t.relation, spans[id(t.tail)]) for t in kept]
            labelled.append(LabelledUnit(index, units[index], offsets[index], sorted(spans.values(), key=lambda s: s.start), facts))
        doc_result = LabelledDocument(doc["id"], lang, [], named, labelled, text, ids)
        doc_result.records = self.records(doc_result)
        return doc_result

    def _names(self, triple: Triple) -> tuple[str, str, str]:
        return (self.graph.entities[triple.head.entity].name, triple.relation, self.graph.entities[triple.tail.entity].name)

    def records(self, doc: LabelledDocument, source: str = "kg2instruct") -> list[dict]:
        """The records of a labelled document: per unit and/or one for the whole document."""
        cfg = self.config
        out = []
        if "unit" in cfg.records:
            for unit in doc.units:
                if not (unit.facts or (cfg.keep_empty and len(unit.spans) >= 2)):
                    continue
                shift = len(unit.text) - len(unit.text.lstrip())
                suffix = f"#s{unit.index}" if cfg.unit == "sentence" else ""
                out.append(make_record(self.graph, f"{doc.id}{suffix}", unit.text.strip(), doc.lang,
                                       [_moved(f, -shift) for f in unit.facts], [_moved(s, -shift) for s in unit.spans],
                                       cfg.names, cfg.entities, source))
        if "document" in cfg.records and cfg.unit == "sentence" and any(u.facts for u in doc.units):
            facts = [_moved(f, u.offset) for u in doc.units for f in u.facts]
            spans = [_moved(s, u.offset) for u in doc.units for s in u.spans]
            out.append(make_record(self.graph, doc.id, doc.text, doc.lang, facts, spans, cfg.names, cfg.entities, source))
        return out


def _moved(item, delta: int):
    """A span or fact with its offsets moved by ``delta`` characters."""
    if isinstance(item, Fact):
        return Fact(_moved(item.head, delta), item.relation, _moved(item.tail, delta))
    return Span(item.entity, item.text, item.start + delta)


def split_of(doc_id: str, ratios: tuple[float, float, float], seed: int) -> str:
    """Deterministic split by document: no document is ever in two splits."""
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "train" if u < ratios[0] else "dev" if u < ratios[0] + ratios[1] else "test"


def relations_by_lang(records: Iterable[dict]) -> dict[str, list[str]]:
    found: dict[str, dict[str, None]] = defaultdict(dict)
    for record in records:
        for relation in record["relations"]:
            found[record["lang"]][relation["relation"]] = None
    return {lang: sorted(names) for lang, names in found.items()}


def entity_types_by_lang(records: Iterable[dict]) -> dict[str, list[str]]:
    found: dict[str, dict[str, None]] = defaultdict(dict)
    for record in records:
        for entity in record["entities"]:
            found[record["lang"]][entity["type"]] = None
    return {lang: sorted(names) for lang, names in found.items()}


def make_instructions(records: list[dict], split: str, inventory: dict[str, dict[str, list[str]]], config: KG2InstructConfig,
                      schema: RelationSchema | None) -> list[dict]:
    """Instruction records for one split: train samples negatives; dev/test ask about the whole schema."""
    from knowlm.ie import records_to_instructions

    out: list[dict] = []
    for task in config.tasks:
        for lang, names in sorted(inventory[task].items()):
            items = names
            if task == "re" and schema and schema.descriptions:
                items = {n: schema.descriptions.get(n, "") for n in names}
            groups = confusable_relations(schema, names) if task == "re" and schema and config.hard_negatives else []
            subset = [r for r in records if r["lang"] == lang]
            for style in config.styles:
                out += records_to_instructions(
                    subset,
                    task,
                    items,
                    style=style,
                    lang=lang,
                    split_num=config.split_num if task == "re" else None,
                    neg_ratio=config.neg_ratio if split == "train" else None,
                    seed=config.seed,
                    hard_groups=groups,
                    wording=config.wording,
                )
    return out


def confusable_relations(schema: RelationSchema, names: list[str]) -> list[list[str]]:
    """For each relation, it and the relations whose head types and tail types both overlap its
    own (``place of birth`` / ``place of death`` / ``located in``...): the hard negatives."""
    groups = []
    for name in names:
        heads, tails = schema.head_types.get(name, set()), schema.tail_types.get(name, set())
        similar = [other for other in names if other != name
                   and heads & schema.head_types.get(other, set()) and tails & schema.tail_types.get(other, set())]
        if similar:
            groups.append([name, *similar])
    return groups


def augmented_records(graph: KnowledgeGraph, config: KG2InstructConfig, exclude: set[tuple[str, str, str]],
                      templates_path: str | Path | None) -> list[dict]:
    """``config.augment`` passages from the graph's triples (none of ``exclude``), languages in turn."""
    from knowlm.ie.kg2instruct.augment import PassageWriter, load_templates

    if templates_path is None:
        from knowlm.resources import path as resource_path

        templates_path = resource_path("kg_templates.yaml")
    writer = PassageWriter(graph, load_templates(templates_path), exclude, config.seed, config.augment_swap)
    langs = sorted({writer.lang_of[r] for facts in writer.facts.values() for r, _ in facts})
    out = []
    for i in range(config.augment):
        lang, text, facts, spans = writer.passage(langs[i % len(langs)])
        out.append(make_record(graph, f"kg-augment-{i}", text, lang, facts, spans, config.names, config.entities, source="kg-augment"))
    return out


def kg2instruct(
    corpus: Iterable[str | Path],
    kg: Iterable[str | Path],
    output: str | Path,
    config: KG2InstructConfig | None = None,
    schema_path: str | Path | None = None,
    relation_map_path: str | Path | None = None,
    gold_path: str | Path | None = None,
    progress: bool = False,
    holdout_path: str | Path | None = None,
    templates_path: str | Path | None = None,
    allow_empty: bool = False,
) -> dict:
    """Run the whole pipeline into ``output`` (atomically) and return the statistics.

    ``holdout_path``: IE records (e.g. a hand-annotated test set) whose documents appear in no
    output and whose triples are never used for augmentation. ``output/texts.jsonl`` holds the
    documents (and passages) that training may read, e.g. for continued pretraining. A graph
    without relations, or a corpus in which no triple is found, is a KnowlmError unless
    ``allow_empty`` (then the empty files are written)."""
    config = config or KG2InstructConfig()
    corpus, kg = [Path(p) for p in corpus], [Path(p) for p in kg]
    for path in [*corpus, *kg]:
        if not path.is_file():
            raise KnowlmError(f"input file not found: {path}")
    holdout = read_holdout(holdout_path) if holdout_path else []
    held_ids = {str(r["id"]) for r in holdout}
    schema = RelationSchema.load(schema_path) if schema_path else None
    graph = KnowledgeGraph.load(kg, load_relation_map(relation_map_path))
    if not graph.relation_counts and not allow_empty:
        raise KnowlmError(f"{', '.join(map(str, kg))}: the knowledge graph holds no triples {{head, relation, tail}}")
    labeller = DistantLabeller(graph, config, schema)
    read_counts: Counter = Counter()
    documents = read_corpus(corpus, read_counts)
    if progress:
        from tqdm import tqdm

        documents = tqdm(documents, desc="labelling", unit="doc", disable=None)  # off when stderr is not a terminal
    labelled = [labeller.label(doc) for doc in documents]
    if not labelled:
        raise KnowlmError("the corpus holds no documents with text")
    kept_docs = [doc for doc in labelled if doc.id not in held_ids]

    splits: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for doc in kept_docs:
        splits[split_of(doc.id, config.split_ratios, config.seed)] += doc.records
    exclude = held_out_triples(graph, labelled, holdout)
    augmented = augmented_records(graph, config, exclude, templates_path) if config.augment else []
    n_templated = len(augmented)
    texts = [{"id": doc.id, "text": doc.text, "lang": doc.lang, "source": "corpus"} for doc in kept_docs]
    texts += [{"id": r["id"], "text": r["text"], "lang": r["lang"], "source": r["source"]} for r in augmented]
    if config.substitute:
        from knowlm.ie.kg2instruct.substitute import Substituter

        substituter = Substituter(graph, exclude, config.seed)
        for doc in kept_docs:
            if split_of(doc.id, config.split_ratios, config.seed) != "train":
                continue
            for k in range(config.substitute):
                variant = substituter.variant(doc, f"~{k}")
                if variant is not None:
                    augmented += labeller.records(variant, source="kg-substitute")
                    texts.append({"id": variant.id, "text": variant.text, "lang": variant.lang, "source": "kg-substitute"})
    splits["train"] += augmented
    all_records = [r for doc in kept_docs for r in doc.records] + augmented
    inventory = {"re": relations_by_lang(all_records), "ner": entity_types_by_lang(all_records)}
    instructions = {name: make_instructions(recs, name, inventory, config, schema) for name, recs in splits.items()}

    per_relation = Counter(r["relation"] for rec in all_records for r in rec["relations"])
    stats = {
        "documents": labeller.counts["documents"],
        "held_out_documents": len(labelled) - len(kept_docs),
        "sentences": labeller.counts["sentences"],
        "mentions": labeller.counts["mentions"],
        "linking": asdict(labeller.link_stats),
        "candidate_triples": labeller.counts["candidate_triples"],
        "dropped_by_rule": dict(sorted(labeller.filter.drops.items())),
        "triples": labeller.counts["triples"],
        "triples_per_relation": dict(per_relation.most_common()),
        "records": len(all_records),
        "augmented_records": n_templated,
        "substituted_records": len(augmented) - n_templated,
        "records_per_split": {k: len(v) for k, v in splits.items()},
        "instructions_per_split": {k: len(v) for k, v in instructions.items()},
        "skipped_input": dict(read_counts),
        "graph": {"entities": len(graph.entities), "relations": len(graph.relation_counts), "aliases": labeller.finder.size},
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
    }
    if not all_records and not allow_empty:
        raise KnowlmError(f"no triple of the graph was found in the corpus ({stats['documents']} documents, "
                          f"{stats['mentions']} mentions, {stats['candidate_triples']} candidate triples); "
                          f"nothing to write (--allow-empty writes the empty files)")
    if gold_path:
        stats["quality"] = quality_check(labelled, gold_path)

    with atomic_dir(output, owned=OUTPUT_FILES) as tmp:
        write_jsonl(tmp / "records.jsonl", all_records)
        for name in SPLITS:
            write_jsonl(tmp / f"{name}.jsonl", instructions[name])
        write_jsonl(tmp / "texts.jsonl", texts)
        (tmp / "schema.json").write_text(json.dumps({t: inventory[t] for t in config.tasks}, ensure_ascii=False, indent=2), encoding="utf-8")
        (tmp / "stats.json").write_text(json.dumps(stats, ensure_ascii=False, indent=2), encoding="utf-8")
        from knowlm.ie.kg2instruct.report import write_report

        write_report(tmp, stats)
    return stats


def quality_check(labelled: list[LabelledDocument], gold_path: str | Path) -> dict:
    """Score distant-supervision triples against hand-annotated documents (canonical entity names)."""
    from knowlm.ie import score

    gold = list(iter_jsonl(gold_path, strict=True))
    predicted = {doc.id: doc.triples for doc in labelled}
    missing = [g["id"] for g in gold if g["id"] not in predicted]
    gold = [g for g in gold if g["id"] in predicted]
    pred = [{"id": g["id"], "relations": [{"head": h, "relation": r, "tail": t} for h, r, t in predicted[g["id"]]]} for g in gold]
    report = score(gold, pred)["relation"]
    return {
        "documents": len(gold),
        "documents_not_in_corpus": len(missing),
        "precision": report["precision"],
        "recall": report["recall"],
        "f1": report["f1"],
        "tp": report["tp"],
        "n_pred": report["n_pred"],
        "n_gold": report["n_gold"],
    }
