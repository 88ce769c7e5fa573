"""KnowLM's IE recipe on the bundled sample: the steps that produced the shipped model.

1. ``knowlm kg2instruct``: NER and RE instructions (zh and en) from the bundled corpus and KG by
   distant supervision, plus passages written from the graph's triples; the hand-annotated
   documents of ``kg_gold.jsonl`` are held out of every output (records, instructions, the texts
   pretraining reads, augmentation).
2. (tiny recipe only) a SentencePiece tokenizer and a tiny LLaMA built from the training-side
   texts and instructions; a 13B run starts from LLaMA instead.
3. ``knowlm data prepare``: the training-side texts, packed at the pretraining length.
4. ``knowlm train pretrain --config ie_tiny_pretrain`` (KnowLM stage 1).
5. ``knowlm train sft --config ie_tiny_sft`` (KnowLM stage 2, on the KG2Instruction output).

``knowlm demo --retrain`` runs :func:`retrain`; :func:`fingerprint` (recipe options, preset files
and data checksums) is written into the shipped model's ``knowlm.json`` and a test compares it
with the current files, so the shipped checkpoint cannot silently drift from its recipe.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

NAME = "ie_tiny"
SHIPPED = {"pretrained": "ie-tiny-pretrained", "tuned": "ie-tiny"}  # under knowlm/resources/models/
SCHEMA_FILE = "ie_schema.json"  # the schema a tuned model was taught, next to its weights
EVAL_IE_EVERY = 2000  # tuning steps between extraction scores on dev documents (--retrain)
PRETRAIN_PRESET = "ie_tiny_pretrain"
SFT_PRESET = "ie_tiny_sft"
DATA_FILES = ("corpus.jsonl", "kg.jsonl", "kg_schema.json", "kg_rules.yaml", "kg_templates.yaml", "kg_gold.jsonl")


@dataclass(frozen=True)
class Recipe:
    """Everything besides the two training presets that decides the shipped model."""

    kg2instruct: dict = field(default_factory=lambda: {
        "styles": ["json"], "wording": "compact", "tasks": ["re", "ner"], "records": ["unit", "document"],
        "names": "canonical", "entities": "arguments", "augment": 20000, "augment_swap": 0.5, "substitute": 32,
        "hard_negatives": True, "neg_ratio": 2.0, "keep_empty": True, "split_ratios": [0.9, 0.1, 0.0], "seed": 0,
    })
    vocab_size: int = 4000
    model: dict = field(default_factory=lambda: {
        "hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 4, "max_position_embeddings": 1024, "seed": 0,
    })
    seq_len: int = 512  # pretraining samples are packed at exactly this length: no token is cut away


RECIPE = Recipe()


def data_paths() -> dict[str, Path]:
    from knowlm import resources

    return {name: resources.path(name) for name in DATA_FILES}


def fingerprint(recipe: Recipe = RECIPE) -> dict:
    """Recipe options, preset files and input data, by content: what the shipped model records."""
    from knowlm.train.config import preset_path
    from knowlm.utils.hashing import sha256_file

    presets = {name: sha256_file(preset_path(name)) for name in (PRETRAIN_PRESET, SFT_PRESET)}
    options = json.dumps(asdict(recipe), sort_keys=True)
    return {
        "name": NAME,
        "options": asdict(recipe),
        "options_sha256": hashlib.sha256(options.encode()).hexdigest(),
        "presets": presets,
        "data": {name: sha256_file(path) for name, path in data_paths().items()},
    }


def shipped_dir(kind: str) -> Path:
    """The checkpoint the recipe produced, shipped in the package: ``pretrained`` (stage 1) or ``tuned``."""
    from knowlm import resources
    from knowlm.errors import KnowlmError

    path = resources.path("models") / SHIPPED[kind]
    if not (path / "config.json").is_file():
        raise KnowlmError(f"shipped checkpoint missing: {path} (reinstall knowlm, or run knowlm demo --retrain)")
    return path


def build_instructions(output: Path, recipe: Recipe = RECIPE) -> dict:
    """Step 1: ``knowlm kg2instruct`` with the recipe's options -> ``output``."""
    from knowlm.ie.kg2instruct import KG2InstructConfig, kg2instruct, load_rules

    files = data_paths()
    options = dict(recipe.kg2instruct)
    config = KG2InstructConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()},
        rules=load_rules(files["kg_rules.yaml"]),
    )
    return kg2instruct([files["corpus.jsonl"]], [files["kg.jsonl"]], output, config, schema_path=files["kg_schema.json"],
                       gold_path=files["kg_gold.jsonl"], holdout_path=files["kg_gold.jsonl"], templates_path=files["kg_templates.yaml"])


def build_base(instructions: Path, output: Path, recipe: Recipe = RECIPE) -> Path:
    """Step 2 (tiny only): tokenizer from the training-side texts and instructions, random tiny LLaMA."""
    from knowlm.models.tiny import TinyConfig, build_model, build_tokenizer
    from knowlm.utils.jsonl import iter_jsonl

    texts = [row["text"] for row in iter_jsonl(instructions / "texts.jsonl")]
    texts += [row["instruction"] + row["input"] + row["output"] for row in iter_jsonl(instructions / "train.jsonl")]
    tokenizer = output.parent / f".{output.name}-tokenizer"
    build_tokenizer(tokenizer, texts=texts, vocab_size=recipe.vocab_size)
    try:
        build_model(output, tokenizer, TinyConfig(vocab_size=recipe.vocab_size, **recipe.model))
    finally:
        import shutil

        shutil.rmtree(tokenizer, ignore_errors=True)
    return output


def prepare_texts(instructions: Path, tokenizer: Path, prefix: Path, recipe: Recipe = RECIPE) -> dict:
    """Step 3: ``knowlm data prepare`` of the training-side texts at the pretraining length."""
    from knowlm.data.pipeline import PrepareConfig, prepare

    return prepare(PrepareConfig(inputs=[str(instructions / "texts.jsonl")], tokenizer=str(tokenizer), output_prefix=str(prefix),
                                 seq_len=recipe.seq_len, pack="best-fit", workers=1))


def pretrain(base: Path, prefix: Path, output: Path, recipe: Recipe = RECIPE, **overrides) -> dict:
    """Step 4: ``knowlm train pretrain --config ie_tiny_pretrain``."""
    from knowlm.train.config import PretrainConfig, build_config
    from knowlm.train.pretrain import pretrain as run

    cfg = build_config(PretrainConfig, PRETRAIN_PRESET, {"model": str(base), "data": [str(prefix)], "output": str(output),
                                                         "seq_len": recipe.seq_len, "overwrite": True, **overrides})
    return run(cfg, quiet=True)


def tune(pretrained: Path, instructions: Path, output: Path, **overrides) -> dict:
    """Step 5: ``knowlm train sft --config ie_tiny_sft`` on the KG2Instruction training split."""
    from knowlm.train.config import SFTConfig, build_config
    from knowlm.train.sft import sft

    cfg = build_config(SFTConfig, SFT_PRESET, {"model": str(pretrained), "data": [str(instructions / "train.jsonl")],
                                               "output": str(output), "overwrite": True, **overrides})
    return sft(cfg, quiet=True)


def commands(model: str = "BASE", workdir: str = "ie-work") -> list[str]:
    """The recipe as command lines (a 13B run: ``model`` is the LLaMA directory, step 2 skipped)."""
    k = RECIPE.kg2instruct
    return [
        "knowlm kg2instruct --corpus corpus.jsonl --kg kg.jsonl --schema kg_schema.json --rules kg_rules.yaml "
        f"--templates kg_templates.yaml --holdout kg_gold.jsonl --gold kg_gold.jsonl --style {','.join(k['styles'])} "
        f"--wording {k['wording']} --task {','.join(k['tasks'])} --records {','.join(k['records'])} --names {k['names']} "
        f"--entities {k['entities']} --augment {k['augment']} --augment-swap {k['augment_swap']} --substitute {k['substitute']} --hard-negatives "
        f"--neg-ratio {k['neg_ratio']} --keep-empty --split {','.join(str(r) for r in k['split_ratios'])} --output {workdir}/kg2i",
        f"knowlm data prepare --input {workdir}/kg2i/texts.jsonl --tokenizer {model} --output-prefix {workdir}/corpus/texts "
        f"--seq-len {RECIPE.seq_len} --pack best-fit",
        f"knowlm train pretrain --config {PRETRAIN_PRESET} --model {model} --data {workdir}/corpus/texts --seq-len {RECIPE.seq_len} "
        f"--output {workdir}/pretrain",
        f"knowlm train sft --config {SFT_PRESET} --model {workdir}/pretrain --data {workdir}/kg2i/train.jsonl --output {workdir}/ie",
    ]


def prepare_summary(instructions: Path, tokenizer: Path, prefix: Path, recipe: Recipe = RECIPE) -> dict:
    """:func:`prepare_texts` with the numbers the demo reports."""
    side = prepare_texts(instructions, tokenizer, prefix, recipe)
    return {"prefix": str(prefix), "documents": side["counts"]["documents"], "sequences": side["counts"]["sequences"],
            "tokens": side["counts"]["tokens"], "seq_len": recipe.seq_len, "packing_efficiency": side["packing_efficiency"],
            "dropped": side["dropped"]}


def describe(model_dir: Path, instructions: Path, training_seconds: float, stage: str) -> None:
    """Record what produced a recipe checkpoint in its ``knowlm.json`` (and the tuned model's schema)."""
    import shutil

    from knowlm.models.manifest import update_manifest

    if stage == "tuned":
        shutil.copy2(instructions / "schema.json", model_dir / SCHEMA_FILE)
    update_manifest(model_dir, recipe={"stage": stage, "fingerprint": fingerprint(), "training_seconds": round(training_seconds, 1),
                                       "retrain": "knowlm demo --retrain", "commands": commands()})


def retrain(workdir: Path, echo: Callable[[str], None] = print, instructions: Path | None = None) -> dict:
    """The whole recipe into ``workdir`` (kg2i/, base/, corpus/, pretrain/, ie/); returns timings and paths.

    ``instructions``: an existing output of :func:`build_instructions` to reuse.
    """
    workdir = Path(workdir)
    timings: dict[str, float] = {}

    def step(name: str, fn):
        echo(f"   recipe: {name}")
        started = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - started, 1)
        return result

    kg2i = Path(instructions) if instructions else workdir / "kg2i"
    if instructions is None:
        step("kg2instruct", lambda: build_instructions(kg2i))
    step("tiny base", lambda: build_base(kg2i, workdir / "base"))
    step("prepare texts", lambda: prepare_texts(kg2i, workdir / "base", workdir / "corpus" / "texts"))
    pre = step("pretrain", lambda: pretrain(workdir / "base", workdir / "corpus" / "texts", workdir / "pretrain"))
    sft = step("sft", lambda: tune(workdir / "pretrain", kg2i, workdir / "ie", **ie_eval_options(kg2i, workdir)))
    describe(workdir / "pretrain", kg2i, timings["pretrain"], "pretrained")
    describe(workdir / "ie", kg2i, timings["pretrain"] + timings["sft"], "tuned")
    return {"instructions": str(kg2i), "pretrained": str(workdir / "pretrain"), "tuned": str(workdir / "ie"),
            "seconds": timings, "pretrain_loss": pre.get("final_loss"), "sft_loss": sft.get("final_loss"),
            "training_seconds": round(timings["pretrain"] + timings["sft"], 1), "ie_f1_by_step": ie_f1_by_step(workdir / "ie")}


def ie_eval_options(instructions: Path, workdir: Path) -> dict:
    """``--eval-ie`` on 24 dev-split documents of the KG2Instruction run, every :data:`EVAL_IE_EVERY` steps:
    the extraction F1 curve in ``ie/metrics.jsonl`` and ``ie/loss.png``. Scoring only reads the model
    (greedy decoding, no optimizer step), so it is no recipe option and not in the fingerprint."""
    from knowlm.train.demo import dev_records

    dev = dev_records(instructions / "train.jsonl", workdir / "dev-records.jsonl", limit=24)
    if dev is None:
        return {}
    return {"eval_ie": str(dev), "eval_ie_every": EVAL_IE_EVERY, "eval_ie_task": "auto", "eval_ie_max_new_tokens": 96}


def ie_f1_by_step(model_dir: Path) -> dict[int, dict[str, float]]:
    """``{step: {"entity": F1, "relation": F1}}`` from a tuning run's metrics."""
    from knowlm.train.metrics import read_metrics

    return {r["step"]: {m: round(r[f"ie_{m}_f1"], 4) for m in ("entity", "relation") if f"ie_{m}_f1" in r}
            for r in read_metrics(model_dir) if "ie_f1" in r}


def export_checkpoint(source: Path, target: Path) -> Path:
    """A recipe checkpoint as shipped: bf16 safetensors, tokenizer, ``knowlm.json`` (and schema), nothing
    else (no optimizer state, metrics or plots). Loaded on CPU it is upcast to fp32."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from knowlm.models.manifest import read_manifest, update_manifest, weight_checksums
    from knowlm.models.tiny import TOKENIZER_FILES
    from knowlm.utils.atomic import atomic_dir

    with atomic_dir(target) as tmp:
        model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.bfloat16)
        model.config.use_cache = True
        model.save_pretrained(str(tmp))
        for item in Path(source).iterdir():
            if item.name in TOKENIZER_FILES or item.name in (SCHEMA_FILE, "generation_config.json"):
                shutil.copy2(item, tmp / item.name)
        manifest = read_manifest(source)
        (tmp / "knowlm.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
        update_manifest(tmp, checksums=weight_checksums(tmp), shipped_dtype="bfloat16")
    return target
