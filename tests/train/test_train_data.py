"""Data side of training: blends, resumable order, batches, label masking, truncation, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from knowlm.errors import KnowlmError
from knowlm.models import templates
from knowlm.train.config import SFTConfig, build_config, parse_weighted
from knowlm.train.data_pretrain import load_pretrain_sets
from knowlm.train.data_sft import load_sft_sets, tokenize_example
from knowlm.train.batching import ExampleStream, collate
from knowlm.train.sampling import BlendedExamples, BlendedIndex


def test_parse_weighted_forms():
    assert parse_weighted(["0.7", "A", "0.3", "B"]) == [(0.7, "A"), (0.3, "B")]
    assert parse_weighted(["A", "B"]) == [(None, "A"), (None, "B")]
    for bad in (["0.7", "A", "0.3"], ["-1", "A"], ["A", "0.5"]):
        with pytest.raises(KnowlmError):
            parse_weighted(bad)


def test_blend_keeps_proportions_in_every_batch_and_reshuffles():
    index = BlendedIndex([50, 7], [0.7, 0.3], seed=1)
    owners = np.array([index.locate(g)[0] for g in range(1000)])
    for start in range(0, 1000, 10):  # every batch of 10 holds 7 of A and 3 of B
        assert (owners[start:start + 10] == 0).sum() == 7
    b_draws = [index.locate(g)[1] for g in range(1000) if owners[g] == 1]
    assert sorted(b_draws[:7]) == list(range(7))  # each pass over B sees every sample once
    assert b_draws[:7] != b_draws[7:14]  # ... in a new order
    again = BlendedIndex([50, 7], [0.7, 0.3], seed=1)
    assert [again.locate(g) for g in range(300, 320)] == [index.locate(g) for g in range(300, 320)]
    # crossing a chunk boundary deep in the stream is still exact
    far = BlendedIndex([50, 7], [0.7, 0.3], seed=1)
    assert far.locate(200_001) == index.locate(200_001)


def test_pretrain_blend_reads_memory_mapped_sources(two_prefixes):
    a, b = two_prefixes
    sets = load_pretrain_sets(["0.5", a, "0.5", b], seq_len=16)
    train, weights = sets.train, sets.weights
    assert weights == [0.5, 0.5] and not sets.evals
    assert isinstance(train[0].dataset._bin, np.memmap)
    blend = BlendedExamples(train, weights, seed=0)
    sources = [blend.index.locate(g)[0] for g in range(40)]
    assert sources.count(0) == sources.count(1) == 20
    with pytest.raises(KnowlmError, match="not found"):
        load_pretrain_sets([a + "-missing"], seq_len=16)


def test_eval_split_holds_out_whole_documents(corpus_prefix):
    sets = load_pretrain_sets([corpus_prefix], seq_len=48, eval_split=0.2)
    train, evals = sets.train, sets.evals
    docs = np.asarray(train[0].dataset.document_indices)
    assert len(evals) == 1 and len(evals[0]) > 0
    assert int(evals[0].indices[0]) in set(docs.tolist())  # held-out part starts at a document boundary
    assert set(train[0].indices.tolist()).isdisjoint(evals[0].indices.tolist())


def test_stream_splits_global_batches_over_ranks_and_resumes(two_prefixes):
    a, _ = two_prefixes
    train = load_pretrain_sets([a], seq_len=16).train
    full = ExampleStream(BlendedExamples(train, None, 3), 16, micro_batch_size=4)
    ranks = [ExampleStream(BlendedExamples(train, None, 3), 16, micro_batch_size=2, world=2, rank=r) for r in (0, 1)]
    for _ in range(3):
        whole = full.next_batch()["input_ids"]
        halves = [s.next_batch()["input_ids"] for s in ranks]
        width = whole.shape[1]
        padded = [torch.nn.functional.pad(h, (0, width - h.shape[1])) for h in halves]
        assert torch.equal(torch.cat(padded), whole)
    state = full.state_dict()
    expected = full.next_batch()["input_ids"]
    resumed = ExampleStream(BlendedExamples(train, None, 3), 16, micro_batch_size=4)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.next_batch()["input_ids"], expected)


def test_collate_pads_and_packs_without_cross_attention():
    a = (np.array([5, 6, 7]), np.array([-100, 6, 7]))
    b = (np.array([8, 9]), np.array([8, 9]))
    padded = collate([[a], [b]], max_len=8, pad_id=0, packing=False)
    assert padded["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    assert padded["labels"].tolist() == [[-100, 6, 7], [8, 9, -100]]
    assert padded["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert padded["num_tokens"] == 5
    packed = collate([[a, b], [b]], max_len=8, pad_id=0, packing=True)
    assert packed["input_ids"].tolist() == [[5, 6, 7, 8, 9], [8, 9, 0, 0, 0]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]  # the padding tail is its own segment
    assert packed["labels"].tolist() == [[-100, 6, 7, -100, 9], [8, 9, -100, -100, -100]]  # b is not predicted from a
    assert "attention_mask" not in packed  # no dense 4-D mask: boundaries come from the positions


def test_packed_forward_equals_separate_forwards(tiny_model):
    model, _ = tiny_model
    a = (np.array([1, 50, 60, 70]), np.array([1, 50, 60, 70]))
    b = (np.array([1, 80, 90]), np.array([1, 80, 90]))
    packed = collate([[a, b]], max_len=16, pad_id=0, packing=True)
    with torch.no_grad():
        # as in training: no KV cache (transformers reads packing from the positions only without one)
        logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits
        la = model(input_ids=torch.from_numpy(a[0])[None]).logits
        lb = model(input_ids=torch.from_numpy(b[0])[None]).logits
    assert torch.allclose(logits[0, :4], la[0], atol=1e-4)
    assert torch.allclose(logits[0, 4:], lb[0], atol=1e-4)


@pytest.mark.parametrize("template", ["alpaca", "llama2"])
def test_labels_masked_exactly_over_the_inference_prompt(tiny_tokenizer, template):
    record = {"instruction": "List the rivers.", "input": "The Yangtze flows through Shanghai.", "output": "Yangtze",
              "history": [["hi", "hello"]]}
    ids, labels, truncated = tokenize_example(tiny_tokenizer, template, record, cutoff_len=4096, train_on_inputs=False,
                                              mask_history=True)
    prompt = templates.render(template, record["instruction"], record["input"], history=record["history"])
    prompt_ids = tiny_tokenizer(prompt)["input_ids"]  # what inference feeds the model
    n = len(prompt_ids)
    assert ids[:n].tolist() == prompt_ids
    assert (labels[:n] == -100).all() and (labels[n:] != -100).all()
    assert ids[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(ids[n:-1]).strip() == "Yangtze"
    assert not truncated
    _, all_labels, _ = tokenize_example(tiny_tokenizer, template, record, 4096, train_on_inputs=True)
    assert all_labels.tolist() == ids.tolist()
    # by default every assistant turn is learned: the earlier answer too, nothing else of the prompt
    same_ids, turn_labels, _ = tokenize_example(tiny_tokenizer, template, record, 4096, train_on_inputs=False)
    assert same_ids.tolist() == ids.tolist()
    history_part = [i for i, y in zip(ids[:n].tolist(), turn_labels[:n].tolist()) if y != -100]
    expected = "hello </s>" if template == "llama2" else "hello"  # llama2 learns to close the turn too
    assert tiny_tokenizer.decode(history_part).strip() == expected
    assert (turn_labels[n:] == labels[n:]).all()


def test_cutoff_truncation_is_counted(tiny_tokenizer, write_records):
    long = {"instruction": "Write a long answer.", "input": "", "output": "word " * 300}
    too_long_prompt = {"instruction": "x " * 400, "input": "", "output": "y"}
    ok = {"instruction": "Say hi.", "input": "", "output": "hi"}
    path = write_records([ok, long, too_long_prompt, ok])
    train, _, _, stats = load_sft_sets([path], tiny_tokenizer, "alpaca", cutoff_len=128, train_on_inputs=False,
                                       val_size=0, seed=0)
    assert stats.records == 4 and stats.truncated == 1 and stats.dropped_no_answer == 1
    assert len(train[0]) == 3 and max(train[0].lengths) == 128


def test_val_split_and_folder_and_weights(tiny_tokenizer, tmp_path, sft_file):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.jsonl").write_text(open(sft_file, encoding="utf-8").read(), encoding="utf-8")
    (folder / "notes.txt").write_text("ignored")
    train, weights, evals, stats = load_sft_sets(["2", str(folder), "1", sft_file], tiny_tokenizer, "alpaca", 512,
                                                 False, val_size=4, seed=0)
    assert weights == [2.0, 1.0] and len(evals) == 2 and all(len(e) == 4 for e in evals)
    assert stats.per_file[str(folder)] == stats.per_file[sft_file] >= 30


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"instruction": "a", "output": "b"}\n{not json\n', "invalid JSON"),
        ('{"instruction": "a"}\n', "'output' missing"),
        ('{"instruction": "a", "output": "b", "history": "oops"}\n', "history"),
        ("", "no instruction records"),
    ],
)
def test_bad_data_files_give_clear_errors(tiny_tokenizer, tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(KnowlmError, match=message):
        load_sft_sets([str(path)], tiny_tokenizer, "alpaca", 256, False, 0, 0)


def test_missing_file_unknown_template_and_bad_options(tiny_tokenizer, sft_file):
    with pytest.raises(KnowlmError, match="not found"):
        load_sft_sets(["nowhere.jsonl"], tiny_tokenizer, "alpaca", 256, False, 0, 0)
    with pytest.raises(KnowlmError, match="unknown prompt template 'vicuna'"):
        load_sft_sets([sft_file], tiny_tokenizer, "vicuna", 256, False, 0, 0)
    with pytest.raises(KnowlmError, match="unknown training option"):
        build_config(SFTConfig, None, {"model": "m", "data": ["d"], "output": "o", "learnin_rate": 1})
    with pytest.raises(KnowlmError, match="strategy"):
        build_config(SFTConfig, None, {"model": "m", "data": ["d"], "output": "o", "strategy": "horovod"})


def test_shipped_presets_load():
    from knowlm.train.config import CONFIG_DIR, PretrainConfig

    for path in CONFIG_DIR.glob("*.yaml"):
        cls = PretrainConfig if path.stem.startswith("pretrain") or path.stem.endswith("_pretrain") else SFTConfig
        cfg = build_config(cls, path.stem, {"model": "m", "data": ["d"], "output": "o"})
        assert cfg.micro_batch_size >= 1
    cfg = build_config(SFTConfig, "sft_oneke", {"model": "m", "data": ["d"], "output": "o", "lora_r": 4})
    assert cfg.template == "llama2" and cfg.lora_r == 4  # flags win over the preset


def test_sft_lora_preset_is_knowlm_finetune_defaults():
    """Values of zjunlp/KnowLM finetune/lora/finetune.py ``train()`` defaults (batch_size 128 = 4 x 32)."""
    cfg = build_config(SFTConfig, "sft_lora", {"model": "m", "data": ["d"], "output": "o"})
    knowlm = dict(lora_r=16, lora_alpha=32, lora_dropout=0.05, learning_rate=3e-4, warmup_steps=10, epochs=3,
                  cutoff_len=512, micro_batch_size=4, val_size=2000, train_on_inputs=False, group_by_length=False,
                  eval_steps=10, save_steps=10, save_total_limit=5, logging_steps=1, template="alpaca",
                  lr_scheduler="linear", min_lr_ratio=0.0, weight_decay=0.0)
    assert {k: getattr(cfg, k) for k in knowlm} == knowlm
    assert cfg.micro_batch_size * cfg.gradient_accumulation_steps == 128
    assert sorted(cfg.lora_target_modules) == sorted(["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "down_proj", "up_proj"])
    assert cfg.save_best == "eval_loss"  # load_best_model_at_end=True when there is a validation set
