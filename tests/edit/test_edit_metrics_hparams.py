"""Per-category metrics, KnowEdit summary, EasyEdit hparams files, statistics cache identity and sample counts."""

from __future__ import annotations

import json

import pytest
import torch

from knowlm.edit import metrics as M
from knowlm.errors import KnowlmError


def _raw(rel, loc_preds, port):
    return {"reliability": [rel], "generalisation": [], "locality_acc": {c: [1.0] * len(p) for c, p in loc_preds.items()},
            "locality_preds": loc_preds, "portability": port}


def test_locality_and_portability_are_means_of_category_means():
    pre = _raw(0.0, {"Relation_Specificity": [[1, 2], [3, 4]], "Forgetfulness": [[5, 6]]}, {})
    post = _raw(1.0, {"Relation_Specificity": [[1, 2], [9, 9]], "Forgetfulness": [[5, 0]]},
                {"Reasoning": [1.0, 0.0], "Subject_Aliasing": [1.0]})
    s = M.summarise(post, pre)
    assert s["locality_by_category"] == {"Relation_Specificity": 0.5, "Forgetfulness": 0.5}
    assert s["locality"] == 0.5  # pooled over probes it would be (1 + 0 + 0.5) / 3
    assert s["portability_by_category"] == {"Reasoning": 0.5, "Subject_Aliasing": 1.0} and s["portability"] == 0.75
    other = M.summarise(_raw(0.5, {"Relation_Specificity": [[1]]}, {}), _raw(0.5, {"Relation_Specificity": [[1]]}, {}))
    avg = M.average([s, other])
    assert avg["reliability"] == 0.75 and avg["locality"] == 0.75
    assert avg["locality_by_category"] == {"Relation_Specificity": 0.75, "Forgetfulness": 0.5}
    ke = M.knowedit_summary(dict(avg, fluency=5.5))
    assert ke == {"edit_succ": 75.0, "portability": 75.0, "portability_by_category": {"Reasoning": 50.0, "Subject_Aliasing": 100.0},
                  "locality": 75.0, "locality_by_category": {"Relation_Specificity": 75.0, "Forgetfulness": 50.0},
                  "fluency": 550.0}
    text = M.table(M.average([M.summarise(pre)]), avg)
    assert "  locality/Forgetfulness" in text and "  portability/Reasoning" in text


def test_fluency_ngram_entropy_matches_easyedit_formula():
    from knowlm.edit.fluency import ngram_entropy

    assert ngram_entropy("a a a a") == 0.0
    # 2-grams: 3 distinct of 3 -> log2(3); 3-grams: 2 distinct -> 1 bit; (2/3*log2 3 + 4/3*1) / 2
    assert ngram_entropy("a b c d") == pytest.approx((2 / 3 * 1.584962500721156 + 4 / 3 * 1.0) / 2)
    assert ngram_entropy("浙江大学") == pytest.approx((2 / 3 * 1.584962500721156 + 4 / 3) / 2)


EASYEDIT_ROME_LLAMA = """alg_name: "ROME"
model_name: "./hugging_cache/llama-2-7b-chat"
stats_dir: "./data/stats"
device: 0
layers: [5]
fact_token: "subject_last"
v_num_grad_steps: 25
v_lr: 5e-1
v_loss_layer: 31
v_weight_decay: 1e-3
clamp_norm_factor: 4
kl_factor: 0.0625
mom2_adjustment: false
context_template_length_params: [[5, 10], [10, 10]]
rewrite_module_tmp: "model.layers.{}.mlp.down_proj"
layer_module_tmp: "model.layers.{}"
mlp_module_tmp: "model.layers.{}.mlp"
attn_module_tmp: "model.layers.{}.self_attn"
ln_f_module: "model.norm"
lm_head_module: "lm_head"
mom2_dataset: "wikipedia"
mom2_n_samples: 100000
mom2_dtype: "float32"
model_parallel: false
"""
EASYEDIT_FT_LLAMA = """alg_name: "FT"
model_name: "./hugging_cache/llama-2-7b"
device: 0

layers: [21]
num_steps: 25
batch_size: 1
max_length: 40
lr: 5e-4
weight_decay: 0
kl_factor: 0
norm_constraint: false
objective_optimization: "prompt_last"
rewrite_module_tmp: "model.layers.{}.mlp.down_proj.weight"
layer_module_tmp: "model.layers.{}"
mlp_module_tmp: "model.layers.{}.mlp"
attn_module_tmp: "model.layers.{}.self_attn"
ln_f_module: "model.norm"
lm_head_module: "lm_head"
model_parallel: false
"""
EASYEDIT_GRACE_LLAMA = """alg_name: "GRACE"
model_name: "./hugging_cache/llama-2-7b"
device: 1

inner_params:
- model.layers[27].mlp.down_proj.weight

edit_lr: 1.0
n_iter: 50
eps: 1.0
dist_fn: euc # euc, mmd, cos
val_init: cold # cold, warm
val_train: sgd # sgd, pert
val_reg: None # early
reg: early_stop # early_stop
replacement: replace_last # replace_last, replace_all, replace_prompt
eps_expand: coverage # , moving_avg, decay
num_pert: 8 # only matters when using perturbation training
dropout: 0.0
"""
EASYEDIT_ALPHA_LLAMA3 = """alg_name: "AlphaEdit"
model_name: "./hugging_cache/llama-3-8b-instruct"
stats_dir: "./data/stats"
P_loc: "./null_space_project.pt"
device: 0
layers: [4, 5, 6, 7, 8]
clamp_norm_factor: 0.75
layer_selection: "all"
fact_token: "subject_last"
v_num_grad_steps: 25
v_lr: 1e-1
v_loss_layer: 31
v_weight_decay: 0.5
kl_factor: 0.0625
mom2_adjustment: true
mom2_update_weight: 15000
rewrite_module_tmp: "model.layers.{}.mlp.down_proj"
layer_module_tmp: "model.layers.{}"
mlp_module_tmp: "model.layers.{}.mlp"
attn_module_tmp: "model.layers.{}.self_attn"
ln_f_module: "model.norm"
lm_head_module: "lm_head"
mom2_dataset: "wikipedia"
mom2_n_samples: 100000
mom2_dtype: "float32"
nullspace_threshold: 2e-2
L2: 1
"""


@pytest.mark.parametrize("method,text,preset", [("rome", EASYEDIT_ROME_LLAMA, "llama-7b"), ("ft", EASYEDIT_FT_LLAMA, "llama-7b"),
                                                ("grace", EASYEDIT_GRACE_LLAMA, "llama-7b"),
                                                ("alphaedit", EASYEDIT_ALPHA_LLAMA3, "llama3-8b")])
def test_easyedit_hparams_files_load_and_equal_our_presets(tmp_path, method, text, preset):
    from dataclasses import asdict

    from knowlm.edit import load_hparams

    path = tmp_path / "h.yaml"
    path.write_text(text)
    theirs = asdict(load_hparams(method, str(path)))
    ours = asdict(load_hparams(method, preset))
    skip = {"mom2_max_length", "mom2_damping", "early_stop_loss", "seed", "context_templates"} if method == "alphaedit" else set()
    assert {k: v for k, v in theirs.items() if k not in skip} == {k: v for k, v in ours.items() if k not in skip}
    if method == "grace":
        assert theirs["layers"] == [27] and theirs["module"] == "model.layers.{}.mlp.down_proj"
    with pytest.raises(KnowlmError, match="holds EasyEdit"):
        load_hparams("memit" if method != "memit" else "rome", str(path))


def test_easyedit_settings_we_do_not_implement_are_refused(tmp_path):
    from knowlm.edit import load_hparams

    path = tmp_path / "g.yaml"
    path.write_text(EASYEDIT_GRACE_LLAMA.replace("replacement: replace_last", "replacement: replace_all"))
    with pytest.raises(KnowlmError, match="replacement: replace_all is not supported"):
        load_hparams("grace", str(path))


def test_presets_exist_for_every_method():
    from knowlm.edit import METHODS, load_hparams, preset_names

    for method in METHODS:
        assert {"tiny", "llama-7b", "llama-13b", "gpt2-xl"} <= set(preset_names(method)), method
        for name in preset_names(method):
            load_hparams(method, name)


def _random_llama(seed):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=3000, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=4)).eval()


def test_statistics_cache_is_keyed_by_weights_not_names(tiny_model, tmp_path):
    """Two models without a directory (both named "") must not share second moments; the same weights
    loaded from another place find theirs again."""
    from knowlm.edit import stats

    _, tok = tiny_model
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"Sentence number {i} about rivers and towns."}) + "\n" for i in range(12)))
    a, b = _random_llama(1), _random_llama(2)
    assert a.config._name_or_path == b.config._name_or_path and a.dtype == b.dtype
    layer = "model.layers.1.mlp.down_proj"
    ma = stats.layer_statistics(a, tok, layer, corpus, 12, 16, tmp_path / "st").mom2
    mb = stats.layer_statistics(b, tok, layer, corpus, 12, 16, tmp_path / "st").mom2
    assert not torch.allclose(ma, mb)
    assert len(list((tmp_path / "st").rglob("*.pt"))) == 2
    a2 = _random_llama(1)
    a2.config._name_or_path = "/somewhere/else"
    calls = []
    real = stats.accumulate
    stats.accumulate = lambda *x, **k: calls.append(1) or real(*x, **k)
    try:
        again = stats.layer_statistics(a2, tok, layer, corpus, 12, 16, tmp_path / "st2")
        same_dir = stats.layer_statistics(_random_llama(1), tok, layer, corpus, 12, 16, tmp_path / "st")
    finally:
        stats.accumulate = real
    assert calls == [1] and torch.equal(same_dir.mom2, ma) and torch.allclose(again.mom2, ma)
    # a later layer's edit does not change an earlier layer's inputs: its statistics stay valid
    with torch.no_grad():
        a.model.layers[1].mlp.down_proj.weight.add_(1.0)
    assert stats.weights_fingerprint(a, "model.layers.0.mlp.down_proj", tok) == \
        stats.weights_fingerprint(_random_llama(1), "model.layers.0.mlp.down_proj", tok)
    assert stats.weights_fingerprint(a, layer, tok) != stats.weights_fingerprint(_random_llama(1), layer, tok)


def test_short_statistics_corpus_warns_and_records_real_count(world, facts_corpus, tmp_path):
    from knowlm.edit import edit

    from _edit_world import request

    model, tok = world
    with pytest.warns(UserWarning, match="holds 24 usable samples, fewer than mom2_n_samples=200; using all 24"):
        result = edit(model, tok, [request(0, 5)], method="rome", hparams="tiny", stats_corpus=facts_corpus,
                      stats_dir=tmp_path / "st", show_answers=False)
    info = result.metrics["statistics"]["model.layers.0.mlp.down_proj"]
    assert info == {"samples": 24, "requested_samples": 200, "tokens": info["tokens"]} and info["tokens"] > 24


def test_fluency_before_and_after(world):
    from _edit_world import request
    from knowlm.edit import edit

    model, tok = world
    result = edit(model, tok, [request(0, 5)], method="ft", hparams="tiny", fluency=True, show_answers=False)
    pre, post = result.metrics["pre"]["fluency"], result.metrics["post"]["fluency"]
    assert 0 < pre < 10 and 0 < post < 10
    assert result.metrics["knowedit"]["fluency"] == round(100 * post, 2)
    assert "fluency (n-gram entropy)" in M.table(result.metrics["pre"], result.metrics["post"])
