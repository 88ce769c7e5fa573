"""IE-aware evaluation while tuning: F1 from the shared extraction pipeline logged to metrics.jsonl
and loss.png, the best model kept, early stopping; scoring checked against known predictions."""

from __future__ import annotations

import copy
import json

import pytest

from knowlm.errors import KnowlmError
from knowlm.train import SFTConfig, sft
from knowlm.train.ie_eval import IEEvaluator, load_dev_records, tasks_of
from knowlm.train.metrics import read_metrics


DEV = [
    {"id": "ie-demo-0", "lang": "en", "text": "Marie Curie was born in Warsaw in 1867.",
     "relations": [{"head": "Marie Curie", "relation": "place of birth", "tail": "Warsaw"}]},
    {"id": "ie-demo-1", "lang": "en", "text": "Zhejiang University is a public university in Hangzhou, China.",
     "relations": [{"head": "Zhejiang University", "relation": "located in", "tail": "Hangzhou"}]},
    {"id": "ie-demo-2", "lang": "en", "text": "The Yangtze River flows through Shanghai.",
     "relations": [{"head": "Yangtze River", "relation": "flows through", "tail": "Shanghai"}]},
]


@pytest.fixture
def dev_file(write_records):
    records = copy.deepcopy(DEV)
    records[0]["entities"] = [{"text": "Marie Curie", "type": "person"}]
    return write_records(records, "dev.jsonl")


def test_scores_known_predictions(dev_file, tiny_tokenizer):
    records = load_dev_records(dev_file)
    assert tasks_of(records, "auto") == ["ner", "re"]
    evaluator = IEEvaluator(records, ["ner", "re"], {}, tiny_tokenizer, "alpaca")
    perfect = {"ner": [{"id": r["id"], "entities": r.get("entities", [])} for r in records],
               "re": [{"id": r["id"], "relations": r["relations"]} for r in records]}
    assert evaluator.score(perfect) == {"ie_entity_f1": 1.0, "ie_relation_f1": 1.0, "ie_f1": 1.0, "ie_parse_failures": 0}
    half = copy.deepcopy(perfect)
    half["re"][0] = {"id": records[0]["id"], "parse_error": "no_json"}
    scored = evaluator.score(half)
    assert scored["ie_relation_f1"] == pytest.approx(0.8) and scored["ie_parse_failures"] == 1
    assert scored["ie_f1"] == pytest.approx(0.9)


def test_ie_f1_logged_best_kept_and_early_stopping(tiny_model_dir, short_sft_file, dev_file, tmp_path, artifacts_dir):
    out = tmp_path / "ie"
    summary = sft(SFTConfig(model=str(tiny_model_dir), data=[short_sft_file], output=str(out), micro_batch_size=2,
                            max_steps=10, learning_rate=1e-3, cutoff_len=192, logging_steps=1, strategy="single",
                            val_size=4, eval_steps=2, eval_ie=dev_file, eval_ie_every=2, eval_ie_task="re",
                            eval_ie_max_new_tokens=8, save_best="ie_f1", early_stopping_patience=1), quiet=True)
    records = read_metrics(out)
    ie_steps = [r["step"] for r in records if "ie_relation_f1" in r]
    # a random tiny model scores 0 every time: step 2 is the best, step 4 brings no improvement -> stop
    assert ie_steps == [2, 4] and summary["steps"] == 4 and summary["early_stopping"]
    assert all(r["ie_f1"] == 0.0 and "eval_loss" in r for r in records if "ie_relation_f1" in r)
    assert summary["best"] == {"metric": "ie_f1", "value": 0.0, "step": 2, "stopped_early": True, "path": str(out / "best")}
    best = json.loads((out / "best" / "knowlm.json").read_text())
    assert best["steps"] == 2 and best["best"]["metric"] == "ie_f1" and (out / "best" / "adapter_model.safetensors").is_file()
    assert (out / "adapter_model.safetensors").is_file()  # the last weights are the output, as always
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    (artifacts_dir / "train_sft_ie_eval_loss.png").write_bytes((out / "loss.png").read_bytes())


@pytest.mark.parametrize("extra, message", [
    ({"save_best": "ie_f1"}, "--save-best ie_f1 needs --eval-ie"),
    ({"save_best": "eval_loss"}, "needs evaluation data"),
    ({"early_stopping_patience": 2}, "needs --save-best"),
    ({"eval_ie": "missing.jsonl"}, "not found"),
])
def test_ie_and_best_option_errors(tiny_model_dir, short_sft_file, tmp_path, extra, message):
    from knowlm.train.config import build_config

    base = dict(model=str(tiny_model_dir), data=[short_sft_file], output=str(tmp_path / "o"), max_steps=1,
                strategy="single", cutoff_len=192)
    with pytest.raises(KnowlmError, match=message):
        sft(build_config(SFTConfig, None, {**base, **extra}), quiet=True)


def test_evaluator_asks_in_the_training_data_wording(dev_file, tiny_tokenizer, tmp_path):
    """Tuning on compact-worded instructions is evaluated with compact prompts (full ones were never taught)."""
    from types import SimpleNamespace

    from knowlm.ie import records_to_instructions

    rows = list(records_to_instructions(copy.deepcopy(DEV), "re", ["place of birth", "located in"], lang="en", wording="compact"))
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = SimpleNamespace(eval_ie=str(dev_file), eval_ie_max_records=0, eval_ie_task="auto", eval_ie_every=1,
                          eval_ie_max_new_tokens=8, micro_batch_size=1, data=[str(data)])
    assert IEEvaluator.from_config(cfg, tiny_tokenizer, "raw").wording == "compact"
    cfg.data = []
    assert IEEvaluator.from_config(cfg, tiny_tokenizer, "raw").wording == "full"
