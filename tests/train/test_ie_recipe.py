"""The IE recipe: presets load, the tuned model records the prompt wording it learned, the
recipe's fingerprint follows its files."""

from __future__ import annotations

import json

from knowlm.train import SFTConfig, sft
from knowlm.train import ie_recipe
from knowlm.train.config import PretrainConfig, SFTConfig as SFT, build_config


def test_presets_are_the_recipe_and_take_overrides():
    pre = build_config(PretrainConfig, ie_recipe.PRETRAIN_PRESET, {"model": "m", "data": ["p"], "output": "o", "seq_len": 512})
    assert (pre.method, pre.precision, pre.seq_len, pre.max_steps) == ("full", "bf16", 512, 3000)
    tune = build_config(SFT, ie_recipe.SFT_PRESET, {"model": "m", "data": ["d.jsonl"], "output": "o", "epochs": 1.0})
    assert (tune.method, tune.template, tune.epochs, tune.cutoff_len) == ("full", "raw", 1.0, 640)


def test_commands_hold_out_the_gold_documents_everywhere():
    lines = ie_recipe.commands(model="llama-13b")
    assert lines[0].startswith("knowlm kg2instruct") and "--holdout kg_gold.jsonl" in lines[0] and "--augment 20000 --augment-swap 0.5 --substitute 32" in lines[0]
    assert "--input ie-work/kg2i/texts.jsonl --tokenizer llama-13b" in lines[1] and "--seq-len 512" in lines[1]
    assert "--config ie_tiny_pretrain --model llama-13b" in lines[2] and "--config ie_tiny_sft" in lines[3]


def test_fingerprint_names_every_input_by_content(tmp_path, monkeypatch):
    first = ie_recipe.fingerprint()
    assert set(first["data"]) == set(ie_recipe.DATA_FILES) and set(first["presets"]) == {"ie_tiny_pretrain", "ie_tiny_sft"}
    assert all(len(v) == 64 for v in [*first["data"].values(), *first["presets"].values()])
    changed = ie_recipe.Recipe(vocab_size=5000)
    assert ie_recipe.fingerprint(changed)["options_sha256"] != first["options_sha256"]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "x"}\n', encoding="utf-8")
    real = ie_recipe.data_paths()
    monkeypatch.setattr(ie_recipe, "data_paths", lambda: {**real, "corpus.jsonl": corpus})
    assert ie_recipe.fingerprint()["data"]["corpus.jsonl"] != first["data"]["corpus.jsonl"]


def test_tuned_model_records_the_compact_wording_and_extraction_uses_it(tiny_model_dir, tmp_path):
    from knowlm.ie import records_to_instructions
    from knowlm.infer import load_generator

    records = [{"id": str(i), "text": f"Marie Curie was born in Warsaw in {1860 + i}.", "lang": "en",
                "relations": [{"head": "Marie Curie", "relation": "place of birth", "tail": "Warsaw"}]} for i in range(6)]
    data = tmp_path / "train.jsonl"
    rows = list(records_to_instructions(records, "re", ["place of birth", "spouse"], lang="en", wording="compact"))
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "tuned"
    summary = sft(SFTConfig(model=str(tiny_model_dir), data=[str(data)], output=str(out), method="full", template="raw",
                            max_steps=2, micro_batch_size=2, cutoff_len=128, strategy="single"), quiet=True)
    assert summary["ie_wording"] == "compact"
    manifest = json.loads((out / "knowlm.json").read_text(encoding="utf-8"))
    assert manifest["ie_wording"] == "compact" and manifest["template"] == "raw" and manifest["checksums"]
    generator = load_generator(str(out), device="cpu")
    assert (generator.template, generator.ie_wording) == ("raw", "compact")
    full = tmp_path / "full.jsonl"
    full.write_text("".join(json.dumps(r) + "\n" for r in records_to_instructions(records, "re", ["spouse"], lang="en")), encoding="utf-8")
    plain = sft(SFTConfig(model=str(tiny_model_dir), data=[str(full)], output=str(tmp_path / "plain"), method="full", template="raw",
                          max_steps=1, micro_batch_size=2, cutoff_len=256, strategy="single"), quiet=True)
    assert "ie_wording" not in plain and "ie_wording" not in json.loads((tmp_path / "plain" / "knowlm.json").read_text())


def test_shipped_checkpoints_match_the_current_recipe_and_data():
    """The checkpoints in the package were produced by today's recipe options, presets and data files
    (change one and ``knowlm demo --retrain`` + re-export are due), and their weights are intact."""
    from knowlm.models.manifest import read_manifest, weight_checksums

    current = ie_recipe.fingerprint()
    for kind, stage in (("pretrained", "pretrained"), ("tuned", "tuned")):
        path = ie_recipe.shipped_dir(kind)
        manifest = read_manifest(path)
        assert manifest["recipe"]["stage"] == stage
        assert manifest["recipe"]["fingerprint"] == current, f"{path}: trained from other recipe files; run knowlm demo --retrain"
        assert manifest["checksums"] == weight_checksums(path) and manifest["shipped_dtype"] == "bfloat16"
    tuned = ie_recipe.shipped_dir("tuned")
    assert read_manifest(tuned)["ie_wording"] == "compact" and read_manifest(tuned)["template"] == "raw"
    assert json.loads((tuned / ie_recipe.SCHEMA_FILE).read_text(encoding="utf-8"))["re"]["zh"]


def test_retrain_scores_extraction_on_dev_documents_while_tuning(tmp_path):
    """--retrain tunes with --eval-ie on dev-split documents of its own KG2Instruction run (the F1 curve)."""
    kg = tmp_path / "kg2i"
    kg.mkdir()
    (kg / "stats.json").write_text(json.dumps({"config": {"split_ratios": [0.0, 1.0, 0.0], "seed": 0}}), encoding="utf-8")
    records = [{"id": f"d{i}#s0", "text": f"Marie Curie was born in Warsaw in {1860 + i}.", "lang": "en",
                "relations": [{"head": "Marie Curie", "relation": "place of birth", "tail": "Warsaw"}]} for i in range(3)]
    (kg / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    options = ie_recipe.ie_eval_options(kg, tmp_path)
    assert options == {"eval_ie": str(tmp_path / "dev-records.jsonl"), "eval_ie_every": ie_recipe.EVAL_IE_EVERY,
                       "eval_ie_task": "auto", "eval_ie_max_new_tokens": 96}
    assert len((tmp_path / "dev-records.jsonl").read_text(encoding="utf-8").splitlines()) == 3
    run = tmp_path / "ie"
    run.mkdir()
    rows = [{"step": 10, "loss": 1.0}, {"step": 2000, "ie_entity_f1": 0.25, "ie_relation_f1": 0.0, "ie_f1": 0.125},
            {"step": 4000, "ie_entity_f1": 0.5, "ie_relation_f1": 0.1, "ie_f1": 0.3}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert ie_recipe.ie_f1_by_step(run) == {2000: {"entity": 0.25, "relation": 0.0}, 4000: {"entity": 0.5, "relation": 0.1}}
