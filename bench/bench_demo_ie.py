"""Held-out extraction of the IE recipe's model against its untuned base, and training wall time.

Both models come from the recipe (``knowlm.train.ie_recipe``): the baseline is the stage-1 model
(continued pretraining only, never instruction-tuned), the project's path the stage-2 model
(tuned on KG2Instruction output). Both extract NER and RE from the 63 hand-annotated documents
of ``kg_gold.jsonl`` that no training stage read, free and schema-constrained, strict match.
Without ``--retrain`` the shipped checkpoints are measured and the training time is the one
their manifest records; with ``--retrain`` the whole recipe runs here first (about an hour on
2 CPU cores) and is timed.

Prints P/R/F1 per measure and language, then ``demo_ie_relation_f1_gain: after - before``.

Run: .venv/bin/python bench/bench_demo_ie.py [--retrain] [--workdir DIR] [--documents N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import _harness  # noqa: F401 - puts src/ on the path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--retrain", action="store_true", help="run the whole recipe first and time it")
    parser.add_argument("--workdir", default=None, help="where the retrained models go (default: a temporary directory)")
    parser.add_argument("--documents", type=int, default=0, help="first N held-out documents only (0: all 63)")
    args = parser.parse_args()

    import torch

    from knowlm.demo_extract import evaluate_stage, held_out_gold, model_schema, scores_text
    from knowlm.models.manifest import read_manifest
    from knowlm.models.templates import resolve_ie_wording
    from knowlm.train import ie_recipe

    torch.set_num_threads(1)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-demo-ie-"))
    if args.retrain:
        started = time.perf_counter()
        result = ie_recipe.retrain(work / "recipe")
        pretrained, tuned = Path(result["pretrained"]), Path(result["tuned"])
        training_seconds = result["training_seconds"]
        print(f"recipe wall time (all steps): {time.perf_counter() - started:.0f} s; steps: {json.dumps(result['seconds'])}")
    else:
        pretrained, tuned = ie_recipe.shipped_dir("pretrained"), ie_recipe.shipped_dir("tuned")
        training_seconds = read_manifest(tuned).get("recipe", {}).get("training_seconds")
    gold = held_out_gold()
    if args.documents:
        gold = [g for g in gold if g["lang"] == "en"][: args.documents // 2] + [g for g in gold if g["lang"] == "zh"][: args.documents - args.documents // 2]
    schema = model_schema(tuned)
    runs = {
        "before": evaluate_stage(work, pretrained, "before", gold, schema, wording=resolve_ie_wording(str(tuned))),  # asked as the tuned model is
        "after": evaluate_stage(work, tuned, "after", gold, schema),
        "after_constrained": evaluate_stage(work, tuned, "after-constrained", gold, schema, constrained=True),
    }
    print(scores_text(runs))
    print(f"training_seconds: {training_seconds}")
    gain = runs["after"]["scores"]["all"]["relation"]["f1"] - runs["before"]["scores"]["all"]["relation"]["f1"]
    print(f"demo_ie_entity_f1_gain: {runs['after']['scores']['all']['entity']['f1'] - runs['before']['scores']['all']['entity']['f1']:.3f}")
    print(f"demo_ie_relation_f1_gain: {gain:.3f}")


if __name__ == "__main__":
    main()
