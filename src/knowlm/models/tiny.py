"""Tiny LLaMA models for tests, the demo and benchmarks.

No weights can be downloaded here, so we train a SentencePiece tokenizer (byte fallback, as
LLaMA's) on the bundled corpus and build a LLaMA-architecture model of any small size in
Hugging Face layout. It is loaded by :func:`knowlm.models.load`, the same code that loads a
13B checkpoint.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from knowlm.models.manifest import write_manifest
from knowlm.models.templates import DEFAULT_TEMPLATE
from knowlm.utils.outputs import save_model_dir


TOKENIZER_FILES = {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"}


@dataclass
class TinyConfig:
    vocab_size: int = 3000
    hidden_size: int = 64
    intermediate_size: int = 176
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 1024
    seed: int = 0


def _bundled_texts() -> Iterable[str]:
    from knowlm.resources import iter_corpus

    for doc in iter_corpus():
        yield doc["text"]


def train_sentencepiece(texts: Iterable[str], vocab_size: int = 3000) -> bytes:
    """Train a LLaMA-style SentencePiece BPE model (unk=0, bos=1, eos=2, byte fallback); returns its bytes."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([t for t in texts if t.strip()]),
        model_writer=model,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=0.9995,
        split_digits=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        allow_whitespace_only_pieces=True,
        max_sentence_length=1 << 16,
        num_threads=2,
        minloglevel=2,
    )
    return model.getvalue()


def build_tokenizer(out_dir: str | Path, texts: Iterable[str] | None = None, vocab_size: int = 3000) -> Path:
    """Write a Hugging Face tokenizer directory (plus the raw ``tokenizer.model``) to ``out_dir``."""
    from transformers import LlamaTokenizer

    out_dir = Path(out_dir)
    with save_model_dir(out_dir) as tmp:
        (tmp / "tokenizer.model").write_bytes(train_sentencepiece(texts or _bundled_texts(), vocab_size))
        tokenizer = LlamaTokenizer.from_pretrained(str(tmp), add_bos_token=True, add_eos_token=False)
        tokenizer.save_pretrained(str(tmp))  # save_pretrained does not keep tokenizer.model; it is still there
    return out_dir


def build_model(out_dir: str | Path, tokenizer_dir: str | Path | None = None, config: TinyConfig | None = None) -> Path:
    """A randomly initialised LLaMA in HF layout with the tokenizer beside it."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = config or TinyConfig()
    out_dir = Path(out_dir)
    with save_model_dir(out_dir) as tmp:
        if tokenizer_dir is None:
            build_tokenizer(tmp / "_tok", vocab_size=config.vocab_size)
            tokenizer_dir = tmp / "_tok"
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        llama_config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=config.num_key_value_heads,
            max_position_embeddings=config.max_position_embeddings,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.unk_token_id,
            tie_word_embeddings=False,
        )
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(llama_config)
        model.save_pretrained(str(tmp))
        GenerationConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.unk_token_id
        ).save_pretrained(str(tmp))
        for item in Path(tokenizer_dir).iterdir():
            if item.is_file() and item.name in TOKENIZER_FILES:
                shutil.copy2(item, tmp / item.name)
        shutil.rmtree(tmp / "_tok", ignore_errors=True)
        write_manifest(tmp, produced_by="knowlm.models.tiny", arguments=asdict(config), template=DEFAULT_TEMPLATE)
    return out_dir


def make_tiny(out_dir: str | Path, **overrides) -> Path:
    """Tokenizer + model in one directory: ``make_tiny("tiny", num_hidden_layers=4)``."""
    return build_model(out_dir, config=TinyConfig(**overrides))
