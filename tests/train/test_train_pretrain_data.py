"""Pretraining data: the PREFIX.json sidecar sets --seq-len and guards the tokenizer; long
sequences continue into further samples (nothing dropped) or are truncated and counted."""

from __future__ import annotations

import numpy as np
import pytest

from knowlm.errors import KnowlmError
from knowlm.train.data_pretrain import load_pretrain_sets


def test_seq_len_defaults_from_the_sidecar_and_the_flag_wins(write_indexed):
    prefix = write_indexed([[list(range(3, 40))]], sidecar={"seq_len": 24})
    sets = load_pretrain_sets([prefix], None)
    assert (sets.seq_len, sets.seq_len_from) == (24, "PREFIX.json")
    assert sets.train[0].seq_len == 24
    flagged = load_pretrain_sets([prefix], 16)
    assert (flagged.seq_len, flagged.seq_len_from) == (16, "--seq-len")
    bare = write_indexed([[list(range(3, 40))]], name="bare")
    assert load_pretrain_sets([bare], None).seq_len_from == "default"


def test_a_dataset_from_another_tokenizer_is_refused_in_one_line(write_indexed, tiny_tokenizer):
    prefix = write_indexed([[list(range(3, 40))]], sidecar={"vocab_size": 32000, "tokenizer": "llama-7b-hf"})
    with pytest.raises(KnowlmError) as err:
        load_pretrain_sets([prefix], 16, tokenizer=tiny_tokenizer)
    message = str(err.value)
    assert "llama-7b-hf" in message and "vocab 32000" in message and f"vocab {len(tiny_tokenizer)}" in message
    assert "\n" not in message
    same = write_indexed([[list(range(3, 40))]], name="same", sidecar={"seq_len": 16})
    assert load_pretrain_sets([same], None, tokenizer=tiny_tokenizer).seq_len == 16
    eos = write_indexed([[list(range(3, 40))]], name="eos", sidecar={"eos_token_id": 7})
    with pytest.raises(KnowlmError, match="eos 7"):
        load_pretrain_sets([eos], 16, tokenizer=tiny_tokenizer)


def test_long_sequences_continue_so_every_token_is_predicted_once(write_indexed):
    long = list(range(3, 103))  # 100 tokens
    prefix = write_indexed([[long], [[5, 6, 7]]])
    sets = load_pretrain_sets([prefix], 16)
    examples = sets.train[0]
    assert len(examples) == 7 + 1  # ceil(99 / 15) pieces + the short sequence
    predicted = []
    for i in range(7):
        ids, labels = examples.example(i)
        assert len(ids) == examples.length(i) <= 16 and np.array_equal(ids, labels)
        predicted += ids[1:].tolist()  # the model predicts every token after the first of its row
    assert predicted == long[1:]
    assert examples.example(7)[0].tolist() == [5, 6, 7]
    info = sets.info()
    assert info["long_sequences"] == 1 and info["continued_examples"] == 6 and info["truncated_tokens"] == 0


def test_truncate_counts_what_it_cuts(write_indexed):
    prefix = write_indexed([[list(range(3, 103))], [[5, 6, 7]]])
    sets = load_pretrain_sets([prefix], 16, long_sequences="truncate")
    assert len(sets.train[0]) == 2 and sets.train[0].length(0) == 16
    assert sets.info()["truncated_tokens"] == 100 - 16 and sets.info()["long_sequences"] == 1
