"""knowlm's ROME, MEMIT, AlphaEdit and FT updates against an independent re-implementation of EasyEdit
(``_reference.py``) on a trained tiny LLaMA and a trained tiny GPT-2: same request, layers,
prefix templates and key statistics, hyperparameters from the presets. Relative error of every
weight update <= 1e-4.

Where knowlm is deliberately more exact, the reference is run at the same precision and the
float32 gap is checked to be what precision explains: ROME's ``C^-1 k`` (float64 solve vs float32
inverse) and AlphaEdit's null space (float64 eigh vs float32 SVD).
"""

from __future__ import annotations

import pytest
import torch

import _reference as R
from knowlm.edit import edit

GROUPS = [["{}"], ["Zorland is far away. {}", "I saw a bird in the tree. {}", "Because of that. {}"]]
FLAT = [t for g in GROUPS for t in g]
ZORLAND = {"prompt": "The capital of Zorland is", "subject": "Zorland", "target_new": "Pell"}
BORVIA = {"prompt": "The capital of Borvia is", "subject": "Borvia", "target_new": "Quex"}
TOL = 1e-4
VALUE_KEYS = ("layers", "v_lr", "v_num_grad_steps", "kl_factor", "v_weight_decay", "clamp_norm_factor", "mom2_adjustment",
              "mom2_update_weight")


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def knowlm_deltas(model, tok, reqs, method, preset, stats_corpus, shared_stats_dir, mode="batch", **overrides):
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if method != "ft":
        overrides.update(mom2_n_samples=60, mom2_max_length=64)
    result = edit(model, tok, reqs, method=method, hparams=preset, keep=True, mode=mode, prefix_templates=GROUPS,
                  stats_corpus=stats_corpus, stats_dir=shared_stats_dir, show_answers=False, **overrides)
    after = model.state_dict()
    deltas = {k: after[k] - before[k] for k in result.metrics["edited_weights"]}
    result.restore()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    hp = {k: getattr(result.hparams, k) for k in VALUE_KEYS if hasattr(result.hparams, k)}
    return deltas, hp, result


def stats_fn(model, tok, layers, stats_corpus, shared_stats_dir, family="llama"):
    """The statistics knowlm used (the tests compare the update math; statistics are compared separately)."""
    from knowlm.edit.layers import names_for
    from knowlm.edit.stats import layer_statistics

    names = names_for(model)
    table = {names.mlp_out.format(l): layer_statistics(model, tok, names.mlp_out.format(l), stats_corpus, 60, 64,
                                                       shared_stats_dir).mom2 for l in layers}
    return table.__getitem__


@pytest.fixture
def llama(world):
    model, tok = world
    tok.padding_side = "right"  # EasyEdit pads right for ROME/MEMIT/AlphaEdit on LLaMA
    return model, tok


@pytest.fixture
def gpt2(gpt2_dir):
    from knowlm.models import load

    model, tok = load(str(gpt2_dir), device="cpu")
    tok.padding_side = "right"
    return model, tok


def _as_ref(request):
    return dict(request)


@pytest.mark.parametrize("layers", [[1], [0, 1]])
def test_rome_llama_matches_reference(llama, stats_corpus, shared_stats_dir, layers):
    model, tok = llama
    mine, hp, result = knowlm_deltas(model, tok, [ZORLAND], "rome", "llama-7b", stats_corpus, shared_stats_dir, layers=layers)
    assert hp["mom2_adjustment"] is False and hp["v_num_grad_steps"] == 25  # EasyEdit's llama-7b preset
    ref = R.execute_rome(model, tok, _as_ref(ZORLAND), hp, FLAT, None)
    assert sorted(mine) == sorted(ref)
    for name in ref:
        assert rel(mine[name], ref[name]) <= TOL, (name, rel(mine[name], ref[name]))


def test_rome_with_covariance_matches_reference(llama, stats_corpus, shared_stats_dir):
    model, tok = llama
    mine, hp, _ = knowlm_deltas(model, tok, [ZORLAND], "rome", "llama-7b", stats_corpus, shared_stats_dir, layers=[1],
                                mom2_adjustment=True)
    mom2 = stats_fn(model, tok, [1], stats_corpus, shared_stats_dir)
    name = "model.layers.1.mlp.down_proj.weight"
    exact = R.execute_rome(model, tok, _as_ref(ZORLAND), hp, FLAT, mom2, precision=torch.float64)
    assert rel(mine[name], exact[name]) <= TOL
    # the reference's float32 inverse differs from both by what C's conditioning allows (cond ~1e6 here)
    as_published = R.execute_rome(model, tok, _as_ref(ZORLAND), hp, FLAT, mom2)
    cond = torch.linalg.cond(mom2("model.layers.1.mlp.down_proj").double()).item()
    assert rel(as_published[name], exact[name]) <= 10 * cond * torch.finfo(torch.float32).eps


def test_memit_llama_matches_reference(llama, stats_corpus, shared_stats_dir):
    model, tok = llama
    mine, hp, result = knowlm_deltas(model, tok, [ZORLAND, BORVIA], "memit", "llama-7b", stats_corpus, shared_stats_dir, layers=[0, 1])
    assert hp["mom2_update_weight"] == 15000
    ref = R.execute_memit(model, tok, [_as_ref(ZORLAND), _as_ref(BORVIA)], hp, GROUPS,
                          stats_fn(model, tok, [0, 1], stats_corpus, shared_stats_dir))
    for name in ref:
        assert rel(mine[name], ref[name]) <= TOL, (name, rel(mine[name], ref[name]))


def test_alphaedit_sequential_matches_reference(llama, stats_corpus, shared_stats_dir):
    """Two sequential edits: the second solve sees the first edit's keys among the preserved ones."""
    model, tok = llama
    mom2 = stats_fn(model, tok, [0, 1], stats_corpus, shared_stats_dir)
    eig = torch.linalg.eigvalsh(mom2("model.layers.0.mlp.down_proj").double())
    gap = int(torch.argmax(eig[21:120] / eig[20:119])) + 20  # a threshold well inside a spectral gap
    threshold = float((eig[gap] * eig[gap + 1]).sqrt())
    mine, hp, result = knowlm_deltas(model, tok, [ZORLAND, BORVIA], "alphaedit", "llama3-8b", stats_corpus, shared_stats_dir,
                                     mode="sequential", layers=[0, 1], nullspace_threshold=threshold)
    hp.update(nullspace_threshold=threshold, L2=result.hparams.l2)
    cache, total = {}, {}
    for request in (ZORLAND, BORVIA):
        step = R.execute_alphaedit(model, tok, [_as_ref(request)], hp, GROUPS, mom2, cache, precision=torch.float64)
        with torch.no_grad():
            for name, delta in step.items():
                model.get_submodule(name.removesuffix(".weight")).weight[...] += delta.float()
                total[name] = total.get(name, 0) + delta.float()
    with torch.no_grad():
        for name, delta in total.items():
            model.get_submodule(name.removesuffix(".weight")).weight[...] -= delta
    for name in total:
        assert rel(mine[name], total[name]) <= TOL, (name, rel(mine[name], total[name]))


@pytest.mark.parametrize("layers", [[1], [0, 1]])
def test_rome_gpt2_matches_reference(gpt2, stats_corpus, shared_stats_dir, layers):
    model, tok = gpt2
    request = dict(ZORLAND, target_new="Brillo")  # two BPE tokens: exercises prompt + decode(target[:-1])
    assert len(tok.encode(" Brillo")) == 2
    mine, hp, _ = knowlm_deltas(model, tok, [request], "rome", "gpt2-xl", stats_corpus, shared_stats_dir, layers=layers)
    assert hp["v_weight_decay"] == 0.5 and hp["v_num_grad_steps"] == 20
    ref = R.execute_rome(model, tok, _as_ref(request), hp, FLAT, None)
    for name in ref:
        assert rel(mine[name], ref[name]) <= TOL, (name, rel(mine[name], ref[name]))


def test_memit_gpt2_matches_reference(gpt2, stats_corpus, shared_stats_dir):
    model, tok = gpt2
    reqs = [dict(ZORLAND, target_new="Brillo"), BORVIA]
    mine, hp, _ = knowlm_deltas(model, tok, reqs, "memit", "gpt2-xl", stats_corpus, shared_stats_dir, layers=[1, 2])
    assert hp["clamp_norm_factor"] == 0.75 and hp["mom2_update_weight"] == 20000
    ref = R.execute_memit(model, tok, [_as_ref(r) for r in reqs], hp, GROUPS, stats_fn(model, tok, [1, 2], stats_corpus, shared_stats_dir))
    for name in ref:
        assert rel(mine[name], ref[name]) <= TOL, (name, rel(mine[name], ref[name]))


@pytest.mark.parametrize("objective", ["prompt_last", "target_new"])
def test_ft_gpt2_matches_reference(gpt2, shared_stats_dir, objective):
    model, tok = gpt2
    mine, _, result = knowlm_deltas(model, tok, [ZORLAND], "ft", "gpt2-xl", None, shared_stats_dir, mode="single",
                                    objective=objective, layers=[1])
    hp = {"layers": [1], "lr": result.hparams.lr, "num_steps": result.hparams.num_steps, "batch_size": result.hparams.batch_size,
          "weight_decay": result.hparams.weight_decay, "norm_constraint": result.hparams.norm_constraint,
          "objective_optimization": objective}
    assert hp["norm_constraint"] == 5e-4
    ref = R.execute_ft(model, tok, [_as_ref(ZORLAND)], hp)
    for name in ref:
        assert rel(mine[name], ref[name]) <= TOL, (name, rel(mine[name], ref[name]))


def test_statistics_match_reference(llama, stats_corpus, stats_texts, shared_stats_dir):
    model, tok = llama
    ours = stats_fn(model, tok, [1], stats_corpus, shared_stats_dir)("model.layers.1.mlp.down_proj")
    theirs = R.layer_mom2(model, tok, "model.layers.1.mlp.down_proj", stats_texts, 64)
    assert rel(ours, theirs) <= 1e-6


def test_ft_llama_matches_reference(llama, shared_stats_dir):
    """FT-M on LLaMA (FT-L differs on purpose: EasyEdit scores the BOS id its tokenizer puts before a lone target)."""
    model, tok = llama
    mine, _, result = knowlm_deltas(model, tok, [ZORLAND], "ft", "llama-7b", None, shared_stats_dir, mode="single",
                                    objective="target_new", layers=[1])
    hp = {"layers": [1], "lr": result.hparams.lr, "num_steps": result.hparams.num_steps, "batch_size": 1,
          "weight_decay": 0.0, "norm_constraint": False, "objective_optimization": "target_new"}
    spec_name = "model.layers.1.mlp.down_proj.weight"
    ref = R.execute_ft(model, tok, [_as_ref(ZORLAND)], hp)
    assert list(ref) == [spec_name] and rel(mine[spec_name], ref[spec_name]) <= TOL
