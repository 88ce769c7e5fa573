"""The lifelong-editing picture: reliability, generalisation and locality of the edits made so far,
after every k sequential edits."""

from __future__ import annotations

from pathlib import Path

SERIES = (("reliability", "Reliability 可靠性"), ("generalisation", "Generalisation 泛化性"),
          ("locality", "Locality 局部性"), ("portability", "Portability 可迁移性"))


def plot_curve(metrics: dict | list[dict], path: str | Path, title: str | None = None) -> Path:
    """Write a PNG of one run's ``metrics["curve"]``, or of several runs (one line style per method)."""
    from knowlm.utils.atomic import atomic_write
    from knowlm.utils.plotting import pyplot

    runs = metrics if isinstance(metrics, list) else [metrics]
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    for ax, (key, label) in zip(axes, SERIES[:3]):
        for run in runs:
            points = [p for p in run.get("curve", []) if p.get(key) is not None]
            if points:
                ax.plot([p["edits"] for p in points], [p[key] for p in points], marker="o", markersize=3,
                        label=run.get("method", "").upper())
        ax.set_title(label)
        ax.set_xlabel("number of sequential edits 连续编辑次数")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score (edits so far)")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    model = runs[0].get("model", "")
    fig.suptitle(title or f"Lifelong editing 终身编辑 ({Path(model).name or 'model'})")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path = Path(path)
    with atomic_write(path, mode="wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
    return path
