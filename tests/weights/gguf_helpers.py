"""Tiny LLaMA-3-style and Qwen2-style models with byte-level BPE tokenizers, saved by transformers 5.

The tokenizers are trained on the bundled corpus with the real families' pre-tokenizer rules (the
split regexes of LLaMA-3 and Qwen2, byte-level alphabet, their special tokens and chat templates),
so GGUF export sees exactly the ``tokenizer.json`` layout those models ship.
"""

from __future__ import annotations

from pathlib import Path

from knowlm.weights.gguf_vocab import LLAMA3_SPLIT, QWEN2_SPLIT

LLAMA3_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                   "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
                   "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
CHATML_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                   "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _texts():
    from knowlm.resources import iter_corpus

    return [doc["text"] for doc in iter_corpus() if doc["text"].strip()]


def bpe_tokenizer(family: str, vocab_size: int = 1200):
    """A trained byte-level BPE ``PreTrainedTokenizerFast`` with ``family``'s ("llama3" or "qwen2") rules."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    llama3 = family == "llama3"
    tok = Tokenizer(models.BPE(ignore_merges=llama3, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT if llama3 else QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_texts(), trainer)
    specials = (["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"] if llama3
                else ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.add_special_tokens(specials)
    if llama3:
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
                                                           special_tokens=[("<|begin_of_text|>", bos)])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
        fast.chat_template = LLAMA3_TEMPLATE
    else:
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
        fast.chat_template = CHATML_TEMPLATE
    return fast


def bpe_model(family: str, out: Path, rope_scaling: dict | None = None, seed: int = 0) -> Path:
    """A random tiny model of ``family`` with its BPE tokenizer, saved with ``save_pretrained`` (no tokenizer.model)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = bpe_tokenizer(family)
    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=256, rms_norm_eps=1e-5)
    torch.manual_seed(seed)
    if family == "llama3":
        rope = {"rope_type": "default", "rope_theta": 500000.0} if rope_scaling is None else {"rope_theta": 500000.0, **rope_scaling}
        config = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             tie_word_embeddings=False, rope_parameters=rope, **common)
        model = LlamaForCausalLM(config)
    else:  # Qwen2 pads its embedding beyond the tokenizer and ties it to the LM head, as Qwen2-0.5B does
        config = Qwen2Config(vocab_size=len(tok) + 8, eos_token_id=tok.eos_token_id, tie_word_embeddings=True,
                             rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, **common)
        model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1) if p.dim() > 1 else p.uniform_(0.5, 1.5)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out
