"""Time per edit and peak memory of ROME, MEMIT, FT and IKE on a small random LLaMA (CPU), one edit at a time (mode single).

Baseline: FT (constrained fine-tuning). Prints absolute figures, then `edit_rome_vs_ft_time: ratio`
(ROME seconds per edit / FT seconds per edit) as the last line.

    .venv/bin/python bench/bench_edit_methods.py
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    import torch

    from knowlm.edit import edit
    from knowlm.edit.demo import DEMO_REQUEST
    from knowlm.models import load
    from knowlm.models.tiny import make_tiny

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny(Path(tmp) / "m", hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                              num_attention_heads=4, num_key_value_heads=4)
        model, tok = load(str(model_dir), device="cpu")
        pairs = [("Zhejiang University", "Paris"), ("Peking University", "Berlin"), ("Fudan University", "Tokyo"),
                 ("Nanjing University", "Cairo")]
        reqs = [dict(DEMO_REQUEST, prompt=f"{s} is located in the city of", subject=s, target_new=t,
                     rephrase_prompts=[f"The city where {s} is located is"], portability=[]) for s, t in pairs]
        times = {}
        for method in ("rome", "memit", "ft", "ike"):
            start = time.perf_counter()
            result = edit(model, tok, reqs, method=method, hparams="tiny", mode="single",
                          stats_dir=Path(tmp) / "stats", show_answers=False)
            m = result.metrics
            times[method] = m["time_per_edit_s"]
            print(f"{method:6s} time/edit {m['time_per_edit_s']:.3f} s  total {time.perf_counter() - start:.2f} s  "
                  f"reliability {m['post']['reliability']:.3f}  locality {m['post']['locality']:.3f}  "
                  f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print(f"edit_rome_vs_ft_time: {times['rome'] / times['ft']:.2f}")


if __name__ == "__main__":
    main()
