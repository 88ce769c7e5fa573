"""A tiny LLaMA that *knows* a handful of made-up facts, trained once per session in seconds.

Besides the facts ("The capital of Zorland is Quex." and a rephrased form) it sees IKE-style
examples ("New Fact: ...\\nPrompt: ...") with random, often counterfactual, new facts, so it learns to
follow a fact given in context and to ignore it for other subjects.
"""

from __future__ import annotations

import random
from pathlib import Path

SUBJECTS = ["Zorland", "Borvia", "Quenta", "Mirok", "Tavel", "Sornia", "Plith", "Gadra", "Velmar", "Hoskin", "Drune", "Keshet"]
CAPITALS = ["Quex", "Lune", "Brill", "Fosk", "Narn", "Pell", "Wyst", "Tarn", "Jolt", "Crim", "Vask", "Mott"]
FACTS = dict(zip(SUBJECTS, CAPITALS))
PROMPT = "The capital of {} is"
REPHRASE = "{}'s capital city is"


def checksum(model) -> str:
    """sha256 over every tensor of the state dict: equal iff the weights are bit-identical."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def fact_lines() -> list[str]:
    lines = []
    for s, c in FACTS.items():
        lines += [f"{PROMPT.format(s)} {c}.", f"{REPHRASE.format(s)} {c}."]
    return lines


def ike_line(rng: random.Random) -> str:
    s = rng.choice(SUBJECTS)
    t = rng.choice(CAPITALS)
    fact = f"New Fact: {PROMPT.format(s)} {t}"
    other = rng.choice([x for x in SUBJECTS if x != s])
    kind = rng.random()
    if kind < 0.6:
        line = f"{fact}\nPrompt: {PROMPT.format(s)} {t}"
    elif kind < 0.75:
        line = f"{fact}\nPrompt: {REPHRASE.format(s)} {t}"
    else:
        line = f"{fact}\nPrompt: {PROMPT.format(other)} {FACTS[other]}"
    return line


def train_world(out: Path, steps: int = 400, seed: int = 0, lr: float = 4e-3, ike_batch: int = 24) -> Path:
    import torch

    from knowlm.models import load
    from knowlm.models.tiny import TinyConfig, build_model, build_tokenizer

    rng = random.Random(seed)
    facts = fact_lines()
    ike = [ike_line(rng) for _ in range(400)]
    build_tokenizer(out / "tok", facts * 20 + ike, vocab_size=700)
    build_model(out / "init", out / "tok", TinyConfig(vocab_size=700, hidden_size=64, intermediate_size=176,
                                                      num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                                                      max_position_embeddings=256, seed=seed))
    model, tok = load(str(out / "init"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster, and kinder to parallel test runs
    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    fact_batch = tok(facts, return_tensors="pt", padding=True)
    fact_labels = fact_batch["input_ids"].masked_fill(fact_batch["attention_mask"] == 0, -100)
    try:
        for _ in range(steps):
            ike = tok([ike_line(rng) for _ in range(ike_batch)], return_tensors="pt", padding=True)
            ike_labels = ike["input_ids"].masked_fill(ike["attention_mask"] == 0, -100)
            loss = model(**fact_batch, labels=fact_labels).loss + model(**ike, labels=ike_labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(str(out / "model"))
    tok.save_pretrained(str(out / "model"))
    import shutil

    shutil.copy2(out / "tok" / "tokenizer.model", out / "model" / "tokenizer.model")
    return out / "model"


def request(i: int, target: int, locality_subjects=None) -> dict:
    """Edit subject i's capital to CAPITALS[target]; locality probes on held-out subjects."""
    s = SUBJECTS[i]
    held_out = locality_subjects if locality_subjects is not None else SUBJECTS[6:]
    return {
        "prompt": PROMPT.format(s), "subject": s, "target_new": CAPITALS[target], "ground_truth": FACTS[s],
        "rephrase_prompts": [REPHRASE.format(s)],
        "locality": [{"prompt": PROMPT.format(o), "answer": FACTS[o]} for o in held_out],
    }


def build_gpt2(out: Path, steps: int = 150, seed: int = 0) -> Path:
    """A tiny GPT-2 (byte-level BPE tokenizer, Conv1D layers) trained for a few seconds on the facts."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    from knowlm.resources import iter_corpus

    texts = fact_lines() * 10 + [d["text"] for d in iter_corpus()][:80]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=True)
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = GPT2TokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                            unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(seed)
    eot = tok.eos_token_id
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=4, n_head=4, n_positions=128,
                                       bos_token_id=eot, eos_token_id=eot, pad_token_id=eot))
    batch = tok(fact_lines(), return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out
