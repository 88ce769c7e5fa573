"""KG2Instruction by distant supervision: corpus + knowledge graph -> gold IE records and
relation-extraction instructions.

documents -> sentences (the corpus pipeline's splitter) -> alias mentions -> entity linking
-> every graph relation between two linked mentions of a sentence -> rule filters -> records
(split by document into train/dev/test) -> instructions via the shared prompt builder.
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
from knowlm.ie.kg2instruct.linking import Linked, LinkStats, link_document
from knowlm.ie.kg2instruct.mentions import MentionFinder
from knowlm.ie.kg2instruct.triples import RelationRule, Triple, TripleFilter, candidate_triples
from knowlm.utils.atomic import atomic_dir
from knowlm.utils.jsonl import JsonlStats, iter_jsonl, open_text, write_jsonl

SPLITS = ("train", "dev", "test")
# What a run writes into its output directory (replaced by a run with --overwrite; other files stay).
OUTPUT_FILES = ("records.jsonl", *(f"{name}.jsonl" for name in SPLITS), "stats.json", "report.md", "stats.png")


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

    def __post_init__(self) -> None:
        if self.unit not in ("sentence", "document"):
            raise KnowlmError(f"unit must be sentence or document, got {self.unit!r}")
        if len(self.split_ratios) != 3 or any(r < 0 for r in self.split_ratios) or abs(sum(self.split_ratios) - 1) > 1e-6:
            raise KnowlmError("split ratios must be three non-negative numbers summing to 1, e.g. 0.8,0.1,0.1")
        if self.neg_ratio < 0:
            raise KnowlmError("neg_ratio must be >= 0")


@dataclass
class LabelledDocument:
    id: str
    lang: str
    records: list[dict]
    triples: list[tuple[str, str, str]]  # canonical (head name, relation, tail name), for quality checks


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
        records, named = [], []
        for index, unit_links in sorted(by_unit.items()):
            candidates = candidate_triples(self.graph, unit_links)
            self.counts["candidate_triples"] += len(candidates)
            kept = self.filter.apply(self.graph, candidates, units[index])
            self.counts["triples"] += len(kept)
            named += [self._names(t) for t in kept]
            if kept or (self.config.keep_empty and len(unit_links) >= 2):
                records.append(self._record(doc["id"], index, units[index], lang, unit_links, kept))
        return LabelledDocument(doc["id"], lang, records, named)

    def _names(self, triple: Triple) -> tuple[str, str, str]:
        return (self.graph.entities[triple.head.entity].name, triple.relation, self.graph.entities[triple.tail.entity].name)

    def _record(self, doc_id: str, index: int, unit: str, lang: str, links: list[Linked], triples: list[Triple]) -> dict:
        text = unit.strip()
        shift = len(unit) - len(unit.lstrip())
        entities = []
        for item in sorted(links, key=lambda l: l.mention.start):
            entity = self.graph.entities[item.entity]
            entities.append({"text": item.mention.text, "type": entity.type, "start": item.mention.start - shift, "end": item.mention.end - shift})
        relations = [
            {
                "head": t.head.mention.text,
                "relation": t.relation,
                "tail": t.tail.mention.text,
                "head_type": self.graph.entities[t.head.entity].type,
                "tail_type": self.graph.entities[t.tail.entity].type,
            }
            for t in triples
        ]
        suffix = f"#s{index}" if self.config.unit == "sentence" else ""
        return {"id": f"{doc_id}{suffix}", "text": text, "lang": lang, "source": "kg2instruct", "entities": entities, "relations": relations}


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


def make_instructions(records: list[dict], split: str, inventory: dict[str, list[str]], config: KG2InstructConfig, schema: RelationSchema | None) -> list[dict]:
    """Instruction records for one split: train samples negatives; dev/test ask about the whole schema."""
    from knowlm.ie import records_to_instructions

    out: list[dict] = []
    for lang, names in sorted(inventory.items()):
        items = {n: schema.descriptions.get(n, "") for n in names} if schema and schema.descriptions else names
        subset = [r for r in records if r["lang"] == lang]
        for style in config.styles:
            out += records_to_instructions(
                subset,
                "re",
                items,
                style=style,
                lang=lang,
                split_num=config.split_num,
                neg_ratio=config.neg_ratio if split == "train" else None,
                seed=config.seed,
            )
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
    allow_empty: bool = False,
) -> dict:
    """Run the whole pipeline into ``output`` (atomically) and return the statistics.

    A graph without relations, or a corpus in which no triple is found, is a KnowlmError unless
    ``allow_empty`` (then the empty files are written)."""
    config = config or KG2InstructConfig()
    corpus, kg = [Path(p) for p in corpus], [Path(p) for p in kg]
    for path in [*corpus, *kg]:
        if not path.is_file():
            raise KnowlmError(f"input file not found: {path}")
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

    splits: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for doc in labelled:
        splits[split_of(doc.id, config.split_ratios, config.seed)] += doc.records
    all_records = [r for doc in labelled for r in doc.records]
    inventory = relations_by_lang(all_records)
    instructions = {name: make_instructions(recs, name, inventory, config, schema) for name, recs in splits.items()}

    per_relation = Counter(r["relation"] for rec in all_records for r in rec["relations"])
    stats = {
        "documents": labeller.counts["documents"],
        "sentences": labeller.counts["sentences"],
        "mentions": labeller.counts["mentions"],
        "linking": asdict(labeller.link_stats),
        "candidate_triples": labeller.counts["candidate_triples"],
        "dropped_by_rule": dict(sorted(labeller.filter.drops.items())),
        "triples": labeller.counts["triples"],
        "triples_per_relation": dict(per_relation.most_common()),
        "records": len(all_records),
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
