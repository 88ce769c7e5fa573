"""Batched generation vs one prompt at a time (how KnowLM's generate scripts looped), same model
and prompts, greedy, fixed number of new tokens. Prints generated tokens/s for both."""

from __future__ import annotations

import tempfile
from pathlib import Path

from _harness import report, timer


def main(n_prompts: int = 32, new_tokens: int = 32, batch_size: int = 16) -> None:
    import torch
    from transformers import LogitsProcessor

    from knowlm.infer import DecodingParams, load_generator
    from knowlm.models.tiny import make_tiny
    from knowlm.resources import iter_corpus

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny(Path(tmp) / "m", hidden_size=256, intermediate_size=688, num_hidden_layers=4)
        generator = load_generator(str(model_dir))
        tokenizer = generator.tokenizer
        docs = [d["text"][:200] for d in iter_corpus()][:n_prompts]
        prompts = [generator.prompt("Summarise the text.", doc) for doc in docs]
        eos = tokenizer.eos_token_id

        class NoEos(LogitsProcessor):  # fixed-length answers make both paths do the same work
            def __call__(self, input_ids, scores):
                scores[:, eos] = -float("inf")
                return scores

        params = DecodingParams(max_new_tokens=new_tokens)
        times: dict = {}
        with timer(times, "baseline"):
            for prompt in prompts:
                generator.generate([prompt], params, logits_processor=lambda idx: [NoEos()])
        with timer(times, "batched"):
            generator.generate(prompts, params, batch_size=batch_size, logits_processor=lambda idx: [NoEos()])
        tokens = len(prompts) * new_tokens
        report(
            "generate_batch",
            times["baseline"] / times["batched"],
            prompts=len(prompts),
            baseline_tokens_per_s=tokens / times["baseline"],
            batched_tokens_per_s=tokens / times["batched"],
        )


if __name__ == "__main__":
    main()
