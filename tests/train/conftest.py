"""Fixtures for the training tests: small indexed datasets written with the project's writer
from the bundled corpus, tokenized by the tiny model's tokenizer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# DeepSpeed compiles a CPU communication op on first use (45-60 s); keep it between runs.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "torch_extensions"))


def _write_indexed(prefix: Path, tokenizer, texts: list[str], seq_len: int = 48) -> str:
    import numpy as np

    from knowlm.data.indexed import IndexedDatasetWriter

    writer = IndexedDatasetWriter(str(prefix), dtype=np.uint16)
    for text in texts:
        ids = tokenizer(text, add_special_tokens=True)["input_ids"] + [tokenizer.eos_token_id]
        writer.add_document([ids[i:i + seq_len] for i in range(0, len(ids), seq_len)])
    writer.finalize()
    return str(prefix)


def _texts(lang: str | None = None) -> list[str]:
    from knowlm.resources import iter_corpus

    texts = sorted({doc["text"] for doc in iter_corpus(lang)})
    if len(texts) < 4:  # the bootstrap corpus is small: add a few sentences so there is something to learn
        texts += [f"Sentence number {i} of the training corpus talks about rivers and cities." for i in range(8)]
    return texts


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from knowlm.models import load_tokenizer

    return load_tokenizer(str(tiny_model_dir), padding_side="right")


@pytest.fixture(scope="session")
def corpus_prefix(tmp_path_factory, tiny_tokenizer) -> str:
    """One indexed dataset (every bundled document, sequences of <= 48 tokens)."""
    return _write_indexed(tmp_path_factory.mktemp("indexed") / "corpus", tiny_tokenizer, _texts())


@pytest.fixture(scope="session")
def two_prefixes(tmp_path_factory, tiny_tokenizer) -> tuple[str, str]:
    """Two distinguishable datasets for blending: every sequence of A starts with BOS, token ids of B are shifted."""
    root = tmp_path_factory.mktemp("blend")
    a = _write_indexed(root / "a", tiny_tokenizer, [f"alpha {i} river" for i in range(20)], seq_len=16)
    b = _write_indexed(root / "b", tiny_tokenizer, [f"beta {i} city mountain" for i in range(7)], seq_len=16)
    return a, b


@pytest.fixture
def write_indexed(tmp_path, tiny_tokenizer):
    """``write_indexed(documents, name, sidecar=None) -> prefix``: documents are lists of token-id
    sequences; ``sidecar`` (a dict) is written as ``PREFIX.json`` the way `knowlm data prepare` does."""
    import numpy as np

    from knowlm.data.indexed import IndexedDatasetWriter

    def write(documents: list[list[list[int]]], name: str = "ds", sidecar: dict | None = None) -> str:
        prefix = tmp_path / name
        writer = IndexedDatasetWriter(str(prefix), dtype=np.uint16)
        for sequences in documents:
            writer.add_document(sequences)
        writer.finalize()
        if sidecar is not None:
            base = {"tokenizer": "tiny", "vocab_size": len(tiny_tokenizer), "bos_token_id": tiny_tokenizer.bos_token_id,
                    "eos_token_id": tiny_tokenizer.eos_token_id}
            (tmp_path / f"{name}.json").write_text(json.dumps({**base, **sidecar}), encoding="utf-8")
        return str(prefix)

    return write


@pytest.fixture(scope="session")
def tiny_bf16_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model stored in bfloat16 (as released LLaMA checkpoints are), use_cache on."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("bf16") / "model"
    shutil.copytree(tiny_model_dir, out)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.bfloat16)
    model.config.use_cache = True
    model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def sft_file(tmp_path_factory) -> str:
    """The bundled sample instructions."""
    from knowlm.resources import path

    return str(path("sft_sample.jsonl"))


@pytest.fixture
def write_records(tmp_path):
    """``write_records(records, name="data.jsonl") -> path`` of a JSONL file."""

    def write(records: list, name: str = "data.jsonl") -> str:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        return str(path)

    return write


@pytest.fixture(scope="session")
def short_sft_file(tmp_path_factory) -> str:
    """Short bilingual IE-flavoured instructions (fast to train on; the bundled sample's IEPile prompts are long)."""
    people = [("Marie Curie", "Warsaw"), ("Albert Einstein", "Ulm"), ("Lu Xun", "Shaoxing"), ("Isaac Newton", "Woolsthorpe"),
              ("鲁迅", "绍兴"), ("居里夫人", "华沙"), ("袁隆平", "北京"), ("Ada Lovelace", "London")]
    records = []
    for i, (person, place) in enumerate(people * 3):
        if i % 3 == 0:
            records.append({"instruction": "Extract (head, relation, tail) triples.", "input": f"{person} was born in {place}.",
                            "output": f"({person},place of birth,{place})"})
        elif i % 3 == 1:
            records.append({"instruction": "List the person entities.", "input": f"{person} lived in {place}.",
                            "output": person})
        else:
            records.append({"instruction": "Where was this person born?", "input": person, "output": place,
                            "system": "Answer briefly."})
    path = tmp_path_factory.mktemp("sft") / "short.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine spinning
    OpenMP threads make each step 20x slower; restored after each test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
