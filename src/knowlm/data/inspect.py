"""``knowlm data inspect``: what is in a prepared dataset, read through the memory map."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from knowlm.data.indexed import IndexedDataset, read_sidecar


def inspect(prefix: str | os.PathLike, plot: str | os.PathLike | None = None, samples: int = 3, tokenizer=None) -> dict:
    """Counts, tokens per source, length histogram (PNG when ``plot``), packing efficiency and
    the first ``samples`` samples decoded (with the sidecar's tokenizer, when it can be loaded)."""
    ds = IndexedDataset(prefix)
    side = read_sidecar(prefix)
    sizes = np.asarray(ds.sizes, dtype=np.int64)
    seq_len = side.get("seq_len") or (int(sizes.max()) if len(sizes) else 0)
    n_tokens = int(sizes.sum())
    edges = np.linspace(0, seq_len, 11).round().astype(int) if seq_len else np.array([0, 1])
    hist, _ = np.histogram(sizes, bins=edges)
    report = {
        "prefix": str(prefix),
        "dtype": ds.dtype.name,
        "sequences": len(ds),
        "documents": ds.num_documents,
        "tokens": n_tokens,
        "seq_len": seq_len,
        "packing_efficiency": round(n_tokens / (len(ds) * seq_len), 4) if len(ds) and seq_len else 0.0,
        "length": {
            "min": int(sizes.min()) if len(sizes) else 0,
            "mean": round(float(sizes.mean()), 2) if len(sizes) else 0.0,
            "max": int(sizes.max()) if len(sizes) else 0,
            "histogram": [{"from": int(a), "to": int(b), "count": int(c)} for a, b, c in zip(edges[:-1], edges[1:], hist)],
        },
        "tokens_per_source": {i["name"]: i["tokens"] for i in side.get("inputs", [])},
        "dropped": side.get("dropped", {}),
        "tokenizer": side.get("tokenizer"),
    }
    if plot:
        _plot(sizes, seq_len, Path(plot), str(prefix))
        report["plot"] = str(plot)
    if samples and len(ds):
        if tokenizer is None and side.get("tokenizer"):
            try:
                from knowlm.models import load_tokenizer

                tokenizer = load_tokenizer(side["tokenizer"])
            except Exception:  # the tokenizer moved: show ids instead
                tokenizer = None
        shown = []
        for i in range(min(samples, len(ds))):
            ids = ds[i].tolist()
            shown.append(tokenizer.decode(ids) if tokenizer is not None else " ".join(map(str, ids[:64])))
        report["samples"] = shown
    return report


def _plot(sizes: np.ndarray, seq_len: int, path: Path, title: str) -> None:
    from knowlm.utils.atomic import atomic_write
    from knowlm.utils.plotting import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.hist(sizes, bins=min(50, max(seq_len, 1)), range=(0, max(seq_len, 1)), color="#4C72B0")
    ax.set_xlabel("tokens per sample")
    ax.set_ylabel("samples")
    ax.set_title(f"{Path(title).name}: {len(sizes)} samples, seq-len {seq_len}")
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)
