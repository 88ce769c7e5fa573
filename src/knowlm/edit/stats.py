"""Second-moment statistics of an MLP's inputs (``E[k k^T]``), computed once and cached on disk.

ROME and MEMIT whiten their update with these statistics so that keys the model sees often are
disturbed least. They are costly for a 7B model (a forward pass over many texts per layer), so the
result is stored under ``cache_dir`` keyed by a hash of the weights the layer's inputs depend on,
the layer, corpus and sample count, and read back on the next run.

The corpus is either a prepared indexed dataset (``PREFIX`` with ``PREFIX.idx``/``PREFIX.bin`` from
``knowlm data prepare``; samples are token ids already) or a JSONL/plain-text file of texts
(default: the bundled sample corpus).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from knowlm.edit.layers import StopForward, capture, get_module
from knowlm.errors import KnowlmError
from knowlm.utils.atomic import atomic_write


def default_cache_dir() -> Path:
    root = os.environ.get("KNOWLM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "knowlm")
    return Path(root) / "edit_stats"


def default_corpus() -> Path:
    from knowlm.resources import corpus_path

    return corpus_path()


def _is_indexed(path: Path) -> Path | None:
    """The dataset prefix if ``path`` names an indexed dataset (prefix, .idx or .bin)."""
    prefix = path.with_suffix("") if path.suffix in (".idx", ".bin") else path
    return prefix if Path(f"{prefix}.idx").is_file() and Path(f"{prefix}.bin").is_file() else None


def corpus_fingerprint(path: str | Path) -> str:
    """Cheap identity of a corpus: resolved path, size and mtime of its files."""
    path = Path(path)
    prefix = _is_indexed(path)
    files = [Path(f"{prefix}.idx"), Path(f"{prefix}.bin")] if prefix else [path]
    parts = [f"{f.resolve()}:{f.stat().st_size}:{int(f.stat().st_mtime)}" for f in files if f.exists()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def weights_fingerprint(model, layer_name: str, tokenizer=None) -> str:
    """Hash of what the inputs of ``layer_name`` depend on: every weight outside the transformer
    blocks and in the blocks up to that layer (names, shapes, dtypes and a strided sample of at
    most 65536 values per tensor, so a 7B model hashes in well under a second), plus the
    tokenizer (its size and how it splits a probe sentence). Two different models never share
    statistics, whatever their names; the same weights find their statistics again wherever
    they were loaded from."""
    import re

    import torch

    from knowlm.edit.layers import names_for

    pattern = re.compile(re.escape(names_for(model).block).replace(r"\{\}", r"(\d+)") + r"\.")
    layer = int(pattern.match(layer_name + ".").group(1)) if pattern.match(layer_name + ".") else None
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        match = pattern.match(name)
        if match and layer is not None and int(match.group(1)) > layer:
            continue
        flat = param.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 65536)].to(torch.float32).cpu().contiguous()
        digest.update(f"{name}:{tuple(param.shape)}:{param.dtype}".encode())
        digest.update(sample.numpy().tobytes())
    if tokenizer is not None:
        probe = tokenizer("The capital of France is Paris. 浙江大学位于杭州。")["input_ids"]
        digest.update(f"{len(tokenizer)}:{list(probe)}".encode())
    return digest.hexdigest()[:16]


def model_label(model) -> str:
    """A readable folder name for the cache (the identity is the weights' hash, not this)."""
    name = str(getattr(model.config, "_name_or_path", "") or getattr(model, "name_or_path", "") or "model")
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).name)[:60] or "model"


def iter_samples(corpus: str | Path, tokenizer, max_length: int, vocab_size: int) -> Iterator[list[int]]:
    """Token id lists from an indexed dataset or a text file, each at most ``max_length`` long."""
    path = Path(corpus)
    prefix = _is_indexed(path)
    if prefix is not None:
        try:
            from knowlm.data.indexed import IndexedDataset
        except ImportError:  # pragma: no cover - the data package ships with knowlm
            raise KnowlmError("reading indexed datasets needs knowlm.data.indexed") from None
        dataset = IndexedDataset(str(prefix))
        for i in range(len(dataset)):
            ids = [int(t) for t in dataset[i][:max_length]]
            if ids and max(ids) >= vocab_size:
                raise KnowlmError(f"{prefix}: token id {max(ids)} is outside the model's vocabulary; "
                                  "the dataset was prepared with another tokenizer")
            if ids:
                yield ids
        return
    if not path.is_file():
        raise KnowlmError(f"statistics corpus not found: {path} (a JSONL/text file or an indexed dataset prefix)")
    from knowlm.utils.jsonl import iter_jsonl, open_text

    if path.name.endswith((".jsonl", ".jsonl.gz", ".json")):
        texts = (r.get("text") for r in iter_jsonl(path))
    else:
        texts = (line.rstrip("\n") for line in open_text(path))
    for text in texts:
        if isinstance(text, str) and text.strip():
            ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
            if len(ids) > 1:
                yield list(ids)


def accumulate(model, tokenizer, layer_name: str, corpus: str | Path, n_samples: int, max_length: int,
               batch_size: int = 8, progress: bool = False) -> tuple["torch.Tensor", int, int]:
    """Sum of ``k k^T`` over every token of up to ``n_samples`` samples; returns (sum, tokens, samples)."""
    import torch

    module = get_module(model, layer_name)
    device = next(model.parameters()).device
    vocab = int(model.get_input_embeddings().weight.shape[0])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total = None
    tokens = samples = 0
    batch: list[list[int]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_samples, desc=f"statistics {layer_name}", unit="sample", disable=None)

    def flush():
        nonlocal total, tokens
        width = max(len(b) for b in batch)
        ids = torch.tensor([b + [pad] * (width - len(b)) for b in batch], device=device)
        mask = torch.tensor([[1] * len(b) + [0] * (width - len(b)) for b in batch], device=device)
        with torch.no_grad(), capture(module, "input", stop=True) as store:
            try:
                model(input_ids=ids, attention_mask=mask)
            except StopForward:
                pass
        keys = store["value"][mask.bool()].to(torch.float32)  # (tokens, d_in)
        total = keys.T @ keys if total is None else total + keys.T @ keys
        tokens += keys.shape[0]
        if bar is not None:
            bar.update(len(batch))
        batch.clear()

    for ids in iter_samples(corpus, tokenizer, max_length, vocab):
        batch.append(ids)
        samples += 1
        if len(batch) == batch_size:
            flush()
        if samples >= n_samples:
            break
    if batch:
        flush()
    if bar is not None:
        bar.close()
    if total is None:
        raise KnowlmError(f"statistics corpus {corpus} holds no usable text")
    return total, tokens, samples


@dataclass
class LayerStats:
    """``E[k k^T]`` of a layer's inputs and what it was computed from."""

    mom2: "torch.Tensor"
    tokens: int
    samples: int
    requested: int
    cache: str


def layer_statistics(model, tokenizer, layer_name: str, corpus: str | Path | None = None, n_samples: int = 1000,
                     max_length: int = 256, cache_dir: str | Path | None = None, progress: bool = False) -> LayerStats:
    """Second moment of the inputs of ``layer_name`` (float32, on the model's device), cached on disk
    under a key made of the weights' hash, layer, corpus and sample settings.

    A corpus with fewer than ``n_samples`` usable samples is used whole, with a warning; the real
    count is in the result (and in the edit's metrics)."""
    import torch

    corpus = Path(corpus) if corpus else default_corpus()
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    key = f"{layer_name}_n{n_samples}_len{max_length}_{corpus_fingerprint(corpus)}_{weights_fingerprint(model, layer_name, tokenizer)}"
    cache = cache_dir / model_label(model) / f"{key}.pt"
    device = next(model.parameters()).device
    stored = None
    if cache.is_file():
        try:
            stored = torch.load(cache, map_location="cpu", weights_only=True)
        except Exception:  # a damaged cache file is recomputed, not fatal
            stored = None
    if stored is None:
        total, tokens, samples = accumulate(model, tokenizer, layer_name, corpus, n_samples, max_length, progress=progress)
        stored = {"mom2": total.cpu(), "tokens": tokens, "samples": samples, "layer": layer_name, "corpus": str(corpus)}
        with atomic_write(cache, mode="wb") as handle:
            torch.save(stored, handle)
    samples = int(stored["samples"])
    if samples < n_samples:
        warnings.warn(f"statistics for {layer_name}: the corpus {corpus} holds {samples} usable samples, fewer than "
                      f"mom2_n_samples={n_samples}; using all {samples}", stacklevel=2)
    return LayerStats((stored["mom2"] / stored["tokens"]).to(device), int(stored["tokens"]), samples, n_samples, str(cache))


def second_moment(model, tokenizer, layer_name: str, corpus: str | Path | None = None, n_samples: int = 1000,
                  max_length: int = 256, cache_dir: str | Path | None = None, progress: bool = False) -> "torch.Tensor":
    """``E[k k^T]`` (float32, on the model's device) for the inputs of ``layer_name``; cached on disk."""
    return layer_statistics(model, tokenizer, layer_name, corpus, n_samples, max_length, cache_dir, progress).mom2
