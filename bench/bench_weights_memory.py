"""Peak memory and wall time of streaming `recover`, `merge-lora` and `export-gguf` against whole-model baselines.

Generates a LLaMA-shaped fp32 checkpoint of >= 2 GB (hidden 2048, ffn 5504, vocab 32000, 8 layers,
1 GB shards), a fine-tuned copy, knowlm's diff between them and a rank-16 LoRA adapter on every
linear layer, in a temporary directory. Each path then runs in its own child process, whose peak
RSS comes from ``os.wait4`` (the kernel's ru_maxrss, which counts mapped file pages too):

- recover, baseline: as KnowLM's weight_diff.py: ``from_pretrained`` base and diff in fp32, add the
  state dicts, ``save_pretrained``.
- merge-lora, baseline: ``from_pretrained`` the base, ``PeftModel.from_pretrained``,
  ``merge_and_unload()``, ``save_pretrained``.
- export-gguf ``q4_0`` / ``q5_1`` (gguf-py quantizers, streamed) and ``q4_k_m`` (f16 file, then
  llama.cpp's ``llama_model_quantize``; needs llama-cpp-python, skipped with a note otherwise),
  against the load-both recover baseline (the issue's yardstick) and a whole-model export
  (``from_pretrained``, quantize every tensor in memory, ``GGUFWriter.add_tensor``, write: llama.cpp's
  converter with ``--no-lazy`` works this way).

Run: .venv/bin/python bench/bench_weights_memory.py [--layers 8] [--workdir DIR]
Last line: ``weights_peak_rss_ratio: R`` (the largest streaming / load-both-baseline peak-RSS ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HIDDEN, FFN, VOCAB, HEADS = 2048, 5504, 32000, 16
LINEARS = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (HIDDEN, HIDDEN), "self_attn.v_proj": (HIDDEN, HIDDEN),
           "self_attn.o_proj": (HIDDEN, HIDDEN), "mlp.gate_proj": (FFN, HIDDEN), "mlp.up_proj": (FFN, HIDDEN),
           "mlp.down_proj": (HIDDEN, FFN)}


def shapes(layers: int) -> dict[str, tuple[int, ...]]:
    out = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for i in range(layers):
        for name, shape in LINEARS.items():
            out[f"model.layers.{i}.{name}.weight"] = shape
        out[f"model.layers.{i}.input_layernorm.weight"] = (HIDDEN,)
        out[f"model.layers.{i}.post_attention_layernorm.weight"] = (HIDDEN,)
    out["model.norm.weight"] = (HIDDEN,)
    out["lm_head.weight"] = (VOCAB, HIDDEN)
    return out


def write_config(directory: Path, layers: int) -> None:
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=layers,
                num_attention_heads=HEADS, num_key_value_heads=HEADS, tie_word_embeddings=False,
                architectures=["LlamaForCausalLM"], dtype="float32").save_pretrained(str(directory))


def generate(work: Path, layers: int) -> dict:
    """Base, fine-tuned target (base + 1e-4 noise), knowlm diff, LoRA adapter."""
    import torch
    from safetensors.torch import save_file

    from knowlm.weights import make_diff
    from knowlm.weights.checkpoint_writer import ShardedWriter

    base, target = work / "base", work / "target"
    base.mkdir(), target.mkdir()
    wb, wt = ShardedWriter(base, "1GB"), ShardedWriter(target, "1GB")
    gen = torch.Generator().manual_seed(0)
    for name, shape in shapes(layers).items():
        b = torch.ones(shape) if len(shape) == 1 else torch.randn(shape, generator=gen) * 0.02
        wb.add(name, b)
        wt.add(name, b + torch.randn(shape, generator=gen) * 1e-4)
        del b
    wb.close(), wt.close()
    write_config(base, layers), write_config(target, layers)
    from knowlm.models.tiny import train_sentencepiece
    from knowlm.resources import iter_corpus

    (base / "tokenizer.model").write_bytes(train_sentencepiece(doc["text"] for doc in iter_corpus()))  # GGUF needs a vocabulary
    started = time.perf_counter()
    diff_summary = make_diff(base, target, work / "diff", max_shard_size="1GB")
    diff_seconds = time.perf_counter() - started
    shutil.rmtree(target)

    adapter = work / "adapter"
    adapter.mkdir()
    lora = {}
    for i in range(layers):
        for name, (out_f, in_f) in LINEARS.items():
            key = f"base_model.model.model.layers.{i}.{name}"
            lora[f"{key}.lora_A.weight"] = torch.randn(16, in_f, generator=gen) * 0.01
            lora[f"{key}.lora_B.weight"] = torch.randn(out_f, 16, generator=gen) * 0.01
    save_file(lora, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    (adapter / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "bias": "none",
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "fan_in_fan_out": False, "inference_mode": True, "base_model_name_or_path": str(base)}))
    size = sum(f.stat().st_size for f in base.glob("*.safetensors"))
    return {"checkpoint_bytes": size, "diff_seconds": diff_seconds, "diff_fixups": diff_summary.fixups}


# -- the four paths, each run in a child process ------------------------------------------------
def child(kind: str, work: Path, layers: int = 8) -> None:
    out = work / f"out-{kind}"
    if kind == "generate":
        (work / "info.json").write_text(json.dumps(generate(work, layers)))
    elif kind == "stream-recover":
        from knowlm.weights import recover

        recover(work / "base", work / "diff", out, max_shard_size="1GB")
    elif kind == "stream-merge":
        from knowlm.weights import merge_lora

        merge_lora(work / "base", work / "adapter", out, max_shard_size="1GB")
    elif kind.startswith("stream-gguf-"):
        from knowlm.weights import export_gguf

        export_gguf(work / "base", out.with_suffix(".gguf"), type=kind.rsplit("-", 1)[1])
    elif kind == "baseline-gguf-q4_0":
        import gguf
        import numpy as np
        import torch
        from transformers import AutoModelForCausalLM

        from knowlm.weights.gguf_export import permute_for_gguf

        model = AutoModelForCausalLM.from_pretrained(str(work / "base"), dtype=torch.float32)
        writer = gguf.GGUFWriter(str(out.with_suffix(".gguf")), "llama")
        tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
        for name, tensor in model.state_dict().items():
            data = tensor.numpy()
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                data = permute_for_gguf(data, HEADS)
            qtype = gguf.GGMLQuantizationType.Q4_0 if data.ndim == 2 else gguf.GGMLQuantizationType.F32
            writer.add_tensor(tmap.get_name(name, try_suffixes=(".weight",)), gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    elif kind == "baseline-recover":
        import torch
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(str(work / "base"), dtype=torch.float32)
        diff = AutoModelForCausalLM.from_pretrained(str(work / "diff"), dtype=torch.float32)
        state_base, state_diff = base.state_dict(), diff.state_dict()
        with torch.no_grad():
            for key in state_diff:
                state_diff[key].add_(state_base[key])
        diff.save_pretrained(str(out), max_shard_size="1GB")
    elif kind == "baseline-merge":
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(str(work / "base"), dtype=torch.float32)
        merged = PeftModel.from_pretrained(base, str(work / "adapter")).merge_and_unload()
        merged.save_pretrained(str(out), max_shard_size="1GB")
    else:
        raise SystemExit(f"unknown child {kind}")


def measure(kind: str, work: Path, layers: int = 8) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one child; its output is deleted afterwards.

    The parent stays small (stdlib only, data generated in a child too): Linux carries the RSS a
    child inherits at fork into its ru_maxrss across exec, so a big parent would inflate every figure.
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", kind, "--workdir", str(work), "--layers", str(layers)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    err = proc.stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{err[-3000:]}")
    shutil.rmtree(work / f"out-{kind}", ignore_errors=True)
    (work / f"out-{kind}.gguf").unlink(missing_ok=True)
    return usage.ru_maxrss / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", default=None)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workdir, args.layers)
        return

    root = Path(tempfile.mkdtemp(prefix="knowlm-bench-weights-", dir=args.workdir))
    try:
        measure("generate", root, args.layers)
        info = json.loads((root / "info.json").read_text())
        print(f"checkpoint: {info['checkpoint_bytes'] / 2**30:.2f} GiB fp32 LLaMA-shaped ({args.layers} layers, hidden {HIDDEN}); "
              f"diff made in {info['diff_seconds']:.1f}s with {info['diff_fixups']} fixup elements")
        results = {}
        kinds = ["stream-recover", "baseline-recover", "stream-merge", "baseline-merge",
                 "stream-gguf-q4_0", "stream-gguf-q5_1", "baseline-gguf-q4_0"]
        if subprocess.run([sys.executable, "-c", "import llama_cpp"], capture_output=True).returncode == 0:
            kinds.append("stream-gguf-q4_k_m")
        else:
            print("stream-gguf-q4_k_m: not measured, llama-cpp-python is not installed (q4_0 and q5_1 are)")
        for kind in kinds:
            results[kind] = measure(kind, root, args.layers)
            print(f"{kind:19s} peak RSS {results[kind][0]:8.0f} MiB   wall {results[kind][1]:6.1f} s", flush=True)
        ratios = {}
        for task in ("recover", "merge"):
            (rss_s, t_s), (rss_b, t_b) = results[f"stream-{task}"], results[f"baseline-{task}"]
            ratios[task] = rss_s / rss_b
            print(f"{task}: peak RSS {rss_s:.0f} / {rss_b:.0f} MiB = {rss_s / rss_b:.3f} of baseline; "
                  f"wall {t_s:.1f} / {t_b:.1f} s = {t_s / t_b:.2f}x baseline")
        rss_load_both, (rss_whole, t_whole) = results["baseline-recover"][0], results["baseline-gguf-q4_0"]
        for kind in [k for k in kinds if k.startswith("stream-gguf-")]:
            rss, t = results[kind]
            ratios[kind] = rss / rss_load_both
            print(f"export-gguf {kind.rsplit('-', 1)[1]}: peak RSS {rss:.0f} MiB = {rss / rss_load_both:.3f} of the load-both "
                  f"baseline, {rss / rss_whole:.3f} of the whole-model export ({rss_whole:.0f} MiB); wall {t:.1f} s vs {t_whole:.1f} s")
        print(f"weights_peak_rss_ratio: {max(ratios.values()):.3f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
