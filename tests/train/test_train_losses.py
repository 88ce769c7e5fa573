"""Chunked cross-entropy equals the full-logits loss (values and gradients) without building
full-vocabulary fp32 logits; the eval loss covers exactly the eval set, whatever the batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from knowlm.train.batching import collate
from knowlm.train.distributed import DistEnv, wrap
from knowlm.train.evaluation import eval_slices, evaluate_loss
from knowlm.train.loss import chunked_nll, full_nll, install_loss_head
from knowlm.train.objectives import LMObjective
from knowlm.train.sampling import ConcatExamples


@pytest.fixture
def fresh_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), use_kernels=False)
    model.config.use_cache = False
    return model


def _batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = []
    for length in (9, 14, 5):
        ids = rng.integers(3, 2000, size=length)
        labels = ids.copy()
        labels[: length // 2] = -100  # a masked prompt
        rows.append([(ids, labels)])
    return collate(rows, 64, 0, False)


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_chunked_nll_equals_full_logits_with_gradients(fresh_model, chunk):
    batch = _batch()
    head = fresh_model.get_output_embeddings()
    hidden = fresh_model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    full = full_nll(head(hidden), batch["labels"])
    (g_full,) = torch.autograd.grad(full.sum(), head.weight, retain_graph=True)
    chunked = chunked_nll(hidden, head.forward, batch["labels"], chunk)
    (g_chunk,) = torch.autograd.grad(chunked.sum(), head.weight)
    assert chunked.dtype == torch.float32 and chunked.shape == full.shape == (int((batch["labels"][:, 1:] != -100).sum()),)
    assert torch.allclose(chunked, full, atol=1e-5)
    assert torch.allclose(g_chunk, g_full, atol=1e-6)


def test_installed_head_returns_token_losses_not_logits(fresh_model):
    from knowlm.train.config import SFTConfig

    batch = _batch(1)
    with torch.no_grad():
        reference = full_nll(fresh_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                             batch["labels"])
    assert install_loss_head(fresh_model, chunk=4)
    cfg = SFTConfig(model="m", data=["d"], output="o")
    runtime = wrap("single", DistEnv(), fresh_model, cfg, "fp32", None)
    nll = runtime.token_nll(batch)
    assert nll.shape == reference.shape and torch.allclose(nll, reference, atol=1e-5)
    # outside token_nll the model is a plain language model again (generation, IE evaluation)
    with torch.no_grad():
        assert fresh_model(input_ids=batch["input_ids"]).logits.shape[-1] == fresh_model.config.vocab_size


@pytest.mark.parametrize("n", [13, 16, 1])
def test_eval_slices_cover_every_example_exactly_once(n):
    for world in (1, 2, 3):
        for mb in (1, 2, 4, 5):
            seen = [i for rank in range(world) for rows in eval_slices(n, mb, world, rank) for i in rows]
            assert sorted(seen) == list(range(n)), (world, mb)
            assert len({len(eval_slices(n, mb, world, r)) for r in range(world)}) == 1  # same number of batches


class _Examples:
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def length(self, i):
        return len(self.rows[i][0])

    def example(self, i):
        return self.rows[i]


def test_eval_loss_is_exact_for_any_micro_batch(fresh_model):
    from knowlm.train.config import SFTConfig

    rng = np.random.default_rng(3)
    rows = []
    for _ in range(13):  # 13 examples: no micro-batch size below divides them except 1 and 13
        ids = rng.integers(3, 2000, size=int(rng.integers(4, 20)))
        rows.append((ids, ids.copy()))
    evals = ConcatExamples([_Examples(rows[:6]), _Examples(rows[6:])])
    total = count = 0.0
    with torch.no_grad():  # the definition: every label token of every eval example, once
        for ids, labels in rows:
            out = fresh_model(input_ids=torch.tensor(ids)[None], labels=torch.tensor(labels)[None])
            total += float(out.loss) * (len(ids) - 1)
            count += len(ids) - 1
    install_loss_head(fresh_model, chunk=-1)
    runtime = wrap("single", DistEnv(), fresh_model, SFTConfig(model="m", data=["d"], output="o"), "fp32", None)
    losses = [evaluate_loss(runtime, evals, LMObjective(), mb, 64, 0) for mb in (1, 2, 4, 5, 16)]
    assert losses == pytest.approx([total / count] * 5, abs=1e-6)
    assert evaluate_loss(runtime, evals, LMObjective(), 4, 64, 0, max_examples=6) == pytest.approx(
        evaluate_loss(runtime, ConcatExamples([_Examples(rows[:6])]), LMObjective(), 3, 64, 0), abs=1e-6)
