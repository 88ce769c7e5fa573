"""Fluency as KnowEdit reports it: the weighted n-gram entropy (2/3 * H2 + 4/3 * H3, halved; EasyEdit's
``compute_n_gram_entropy``) of text sampled after the edit prompt (top-5 sampling, 100 tokens in
all, EasyEdit's ``generate_fast``). A model an edit broke repeats itself and scores low.

EasyEdit splits words with NLTK's ``word_tokenize``; we split on words and punctuation with one
regular expression, and count each CJK character as a word (NLTK would keep a run of Chinese
characters as one token, which makes the entropy of Chinese text meaningless).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter

_WORD = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff]|[^\W\u2e80-\u9fff]+|[^\w\s]", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def ngram_entropy(text: str, ns: tuple[int, ...] = (2, 3), weights: tuple[float, ...] = (2 / 3, 4 / 3)) -> float:
    tokens = words(text)
    values = []
    for n, w in zip(ns, weights):
        counts = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        total = sum(counts.values())
        entropy = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
        values.append(w * entropy)
    return sum(values) / len(values)


def sample_texts(model, tokenizer, prompts: list[str], max_out_len: int = 100, seed: int = 42) -> list[str]:
    """One top-5 sample per prompt, ``max_out_len`` tokens including the prompt."""
    import torch

    device = next(model.parameters()).device
    texts = []
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        torch.manual_seed(seed)
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(device)
            new = max(1, max_out_len - ids.shape[1])
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=5,
                                     top_p=1.0, temperature=1.0, max_new_tokens=new, min_new_tokens=new,
                                     pad_token_id=tokenizer.pad_token_id)
            text = tokenizer.decode(out[0], skip_special_tokens=True)
            texts.append(unicodedata.normalize("NFKD", text).replace("\n\n", " "))
    return texts


def fluency(model, tokenizer, prompts: list[str], max_out_len: int = 100, seed: int = 42) -> list[float]:
    return [ngram_entropy(t) for t in sample_texts(model, tokenizer, prompts, max_out_len, seed)]
