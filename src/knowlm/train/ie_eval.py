"""IE-aware evaluation while tuning: extract from a dev set with the model being trained and
score it, with the project's one prompt builder, parser and scorer (:mod:`knowlm.ie`).

What a KnowLM user wants to watch is entity/relation F1, not only the loss: a run can lower the
loss while its answers stop parsing. Every ``--eval-ie-every`` steps the in-training model is
wrapped in the shared generator (:class:`knowlm.infer.Generator`), prompted with the run's
template, and its answers go through ``extract_texts`` and ``score``. Each process extracts a
slice of the dev records; the predictions are gathered and scored identically on every rank.
"""

from __future__ import annotations

from dataclasses import dataclass

from knowlm.errors import KnowlmError

TASK_MEASURES = {"ner": ("entity",), "re": ("relation",), "ee": ("event_trigger", "event_argument")}
TASK_FIELDS = {"ner": "entities", "re": "relations", "ee": "events"}


def load_dev_records(path: str, limit: int = 0) -> list[dict]:
    """IE records (``knowlm.ie`` record v1) with ids, validated; the first ``limit`` when given."""
    from pathlib import Path

    from knowlm.ie import validate
    from knowlm.utils.jsonl import iter_jsonl

    if not Path(path).is_file():
        raise KnowlmError(f"--eval-ie file not found: {path}")
    records = []
    for i, record in enumerate(iter_jsonl(path, strict=True)):
        record = validate(record, f"{path}:{i + 1}")
        record.setdefault("id", f"dev-{i}")
        records.append(record)
        if limit and len(records) >= limit:
            break
    if not records:
        raise KnowlmError(f"--eval-ie {path} holds no IE records")
    return records


def tasks_of(records: list[dict], task: str) -> list[str]:
    """``auto``: every task the records annotate (entities -> ner, relations -> re, events -> ee)."""
    if task != "auto":
        return [task]
    found = [t for t, field in TASK_FIELDS.items() if any(r.get(field) for r in records)]
    if not found:
        raise KnowlmError("--eval-ie records annotate no entities, relations or events; nothing to score")
    return found


@dataclass
class IEEvaluator:
    """Extraction F1 of the model being trained on a fixed dev set."""

    records: list[dict]
    tasks: list[str]
    schemas: dict
    tokenizer: object
    template: str
    every: int = 0
    max_new_tokens: int = 128
    batch_size: int = 16
    style: str = "json"
    wording: str = "full"  # the IE prompt wording of the training data: ask the model as it is taught

    @classmethod
    def from_config(cls, cfg, tokenizer, template: str) -> "IEEvaluator":
        from knowlm.ie.datasets import schema_from_records

        records = load_dev_records(cfg.eval_ie, cfg.eval_ie_max_records)
        tasks = tasks_of(records, cfg.eval_ie_task)
        schemas = {t: schema_from_records(records, t) for t in tasks}
        from knowlm.train.sft import data_ie_wording

        wording = (data_ie_wording(cfg.data) if getattr(cfg, "data", None) else None) or "full"
        return cls(records, tasks, schemas, tokenizer, template, cfg.eval_ie_every, cfg.eval_ie_max_new_tokens,
                   max(1, cfg.micro_batch_size * 4), wording=wording)

    def predict(self, model, autocast, rank: int = 0, world: int = 1) -> dict[str, list[dict]]:
        """This process's predictions per task (records ``rank::world``)."""
        from knowlm.ie.extract import extract_texts
        from knowlm.infer import DecodingParams, Generator

        mine = self.records[rank::world]
        side = self.tokenizer.padding_side
        try:
            generator = Generator(model, self.tokenizer, template=self.template)
            params = DecodingParams(max_new_tokens=self.max_new_tokens)
            texts = [{"id": r["id"], "text": r["text"], "lang": r.get("lang")} for r in mine]
            with autocast:
                return {task: extract_texts(generator, texts, task, self.schemas[task], style=self.style, wording=self.wording,
                                            params=params, batch_size=self.batch_size) if texts else []
                        for task in self.tasks}
        finally:
            self.tokenizer.padding_side = side  # the generator pads on the left; training collates itself

    def score(self, predictions: dict[str, list[dict]]) -> dict:
        """``ie_<measure>_f1`` per measure, ``ie_f1`` (mean of each task's main measure), parse failures."""
        from knowlm.ie.metrics import score

        out: dict = {}
        mains = []
        failures = 0
        for task in self.tasks:
            report = score(self.records, predictions[task])
            for measure in TASK_MEASURES[task]:
                out[f"ie_{measure}_f1"] = report[measure]["f1"]
            mains.append(report[TASK_MEASURES[task][0]]["f1"])
            failures += report["parse_failures"]["total"]
        out["ie_f1"] = sum(mains) / len(mains)
        out["ie_parse_failures"] = failures
        return out

    def evaluate(self, runtime) -> dict:
        """Every process extracts its slice; predictions are gathered and scored the same way everywhere."""
        runtime.train(False)
        try:
            mine = self.predict(runtime.module, runtime.autocast(), runtime.env.rank, runtime.env.world)
        finally:
            runtime.train(True)
        gathered = runtime.gather_objects(mine)
        merged = {task: [p for part in gathered for p in part[task]] for task in self.tasks}
        return self.score(merged)
