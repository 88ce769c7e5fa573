"""The editing stage of ``knowlm demo``: change one fact with ROME and show before/after."""

from __future__ import annotations

import json
import time
from pathlib import Path

DEMO_REQUEST = {
    "prompt": "Zhejiang University is located in the city of",
    "subject": "Zhejiang University",
    "target_new": "Paris",
    "ground_truth": "Hangzhou",
    "rephrase_prompts": ["The city where Zhejiang University is located is"],
    "locality": [{"prompt": "The capital of China is", "answer": "Beijing"},
                 {"prompt": "Peking University is located in the city of", "answer": "Beijing"}],
    "portability": [{"prompt": "Zhejiang University is located in the country of", "answer": "France"}],
}


def demo_stage(workdir: str | Path, model_dir: str | Path, method: str = "rome") -> dict:
    """Edit :data:`DEMO_REQUEST` into ``model_dir`` (weights restored afterwards) and return a summary.

    Key statistics come from the bundled corpus and are cached in ``workdir/edit_stats``; the
    metrics JSON is written to ``workdir/edit_metrics.json``."""
    from knowlm.edit.editor import edit
    from knowlm.edit.metrics import table
    from knowlm.models import load
    from knowlm.utils.atomic import atomic_write

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model, tokenizer = load(str(model_dir), device="cpu")
    result = edit(model, tokenizer, [DEMO_REQUEST], method=method, stats_dir=workdir / "edit_stats")
    metrics = result.metrics
    with atomic_write(workdir / "edit_metrics.json") as handle:
        json.dump(metrics, handle, ensure_ascii=False, indent=2)
    with atomic_write(workdir / "edit_requests.json") as handle:  # for `knowlm edit --requests` after the demo
        json.dump([DEMO_REQUEST], handle, ensure_ascii=False, indent=2)
    req = metrics["requests"][0]
    return {
        "method": method,
        "prompt": req["prompt"],
        "target_new": req["target_new"],
        "answer_before": req["answer_before"],
        "answer_after": req["answer_after"],
        "pre": metrics["pre"],
        "post": metrics["post"],
        "table": table(metrics["pre"], metrics["post"]),
        "time_per_edit_s": metrics["time_per_edit_s"],
        "seconds": round(time.perf_counter() - start, 2),
        "metrics_file": str(workdir / "edit_metrics.json"),
    }
