"""`knowlm weights ...`: diff/recover, LoRA merge, Meta conversion, GGUF/MindSpore export, download."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from knowlm.cli._common import OVERWRITE, console

weights_app = typer.Typer(
    help="Streaming weight tools: diff/recover, merge-lora, convert-meta, export-gguf, export-mindspore, download.\n\n"
    "Example: knowlm weights merge-lora --base demo-work/pretrain --adapter demo-work/sft --output demo-work/examples/merged",
    no_args_is_help=True,
)


def _outputs(output: Path, overwrite: bool, kind: str, *inputs) -> None:
    """The output policy, before any tensor is read (the library names missing inputs itself)."""
    from knowlm.utils.outputs import check_output

    check_output(output, overwrite=overwrite, kind=kind, inputs=[p for _, p in inputs])


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


@weights_app.command("diff")
def diff_cmd(
    base: Path = typer.Option(..., "--base", "-b", help="Base model directory (e.g. LLaMA in HF layout)."),
    target: Path = typer.Option(..., "--target", "-t", help="Fine-tuned model directory to publish as a diff."),
    output: Path = typer.Option(..., "--output", "-o", help="Diff directory to write."),
    dtype: Optional[str] = typer.Option(None, help="Store the diff as float16/bfloat16 (lossy, smaller); default: the target's dtype (bit-exact)."),
    max_shard_size: str = typer.Option("5GB", help="Largest safetensors shard."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Write TARGET - BASE tensor by tensor, with SHA-256 of every target tensor in knowlm.json.

    Example: knowlm weights diff --base demo-work/pretrain --target demo-work/merged --output demo-work/examples/diff

    ZhiXi: knowlm weights diff --base llama-13b-hf --target zhixi-13b --output zhixi-13b-diff
    """
    from knowlm.weights import make_diff

    _outputs(output, overwrite, "dir", ("--base", base), ("--target", target))
    s = make_diff(base, target, output, dtype=dtype, max_shard_size=max_shard_size, progress=True)
    exactness = (f"bit-exact ({s.fixups} elements stored as fixups)" if s.exact
                 else f"lossy {dtype} (largest error {s.max_abs_error:.3g})")
    console.print(f"Wrote the diff of {s.tensors} tensors to {s.output} ({_gib(s.bytes_written)}) in {s.seconds:.1f}s; "
                  f"recovery will be {exactness} and verified against per-tensor SHA-256."
                  + (f" Base tensors not in the target were ignored: {len(s.ignored_base_tensors)}." if s.ignored_base_tensors else "")
                  + (f" Skipped {s.skipped_buffers} rotary_emb.inv_freq buffers (transformers 4.28 layout; rebuilt from the config on load)."
                     if s.skipped_buffers else ""))


@weights_app.command("recover")
def recover_cmd(
    base: Path = typer.Option(..., "--base", "-b", help="Base model directory the diff was made from."),
    diff: Path = typer.Option(..., "--diff", "-d", help="Diff directory (knowlm's, or KnowLM's original .bin diff)."),
    output: Path = typer.Option(..., "--output", "-o", help="Recovered model directory to write."),
    expected_sum: Optional[float] = typer.Option(
        None, help="KnowLM's naive check, e.g. 94052.2891 for ZhiXi-13B: the float32 sum of the recovered state dict as "
        "transformers 4.28 held it (rotary inv_freq buffers included, rebuilt from config.json if the base lacks them)."),
    sum_tolerance: float = typer.Option(1e-2, help="Absolute tolerance of --expected-sum (KnowLM's atol)."),
    max_shard_size: str = typer.Option("5GB", help="Largest safetensors shard."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Recover BASE + DIFF tensor by tensor and verify every tensor; nothing is written on failure.

    Example: knowlm weights recover --base demo-work/pretrain --diff demo-work/examples/diff --output demo-work/examples/recovered

    ZhiXi: knowlm weights recover --base llama-13b-hf --diff zhixi-13b-diff --output zhixi-13b --expected-sum 94052.2891
    """
    from knowlm.weights import recover

    _outputs(output, overwrite, "dir", ("--base", base), ("--diff", diff))
    s = recover(base, diff, output, expected_sum=expected_sum, sum_tolerance=sum_tolerance,
                max_shard_size=max_shard_size, progress=True)
    total = f"; KnowLM's naive sum {s.weight_sum:.4f}" if s.mode == "legacy" or expected_sum is not None else ""
    skipped = (f" Skipped {s.skipped_buffers} rotary_emb.inv_freq buffers of the diff (transformers 4.28 layout; "
               "recomputed from config.json on load)." if s.skipped_buffers else "")
    console.print(f"Recovered {s.tensors} tensors into {s.output} ({_gib(s.bytes_written)}) in {s.seconds:.1f}s; "
                  f"verification: {s.verification}{total}.{skipped}")


@weights_app.command("merge-lora")
def merge_lora_cmd(
    base: Path = typer.Option(..., "--base", "-b", help="Base model directory (full precision)."),
    adapter: Path = typer.Option(..., "--adapter", "-a", help="PEFT LoRA adapter directory."),
    output: Path = typer.Option(..., "--output", "-o", help="Merged model directory to write."),
    allow_noop: bool = typer.Option(False, "--allow-noop", help="Write even if some targeted tensors did not change."),
    max_shard_size: str = typer.Option("5GB", help="Largest safetensors shard."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Merge a LoRA adapter into its base, tensor by tensor, checking that every target changed.

    Example: knowlm weights merge-lora --base demo-work/pretrain --adapter demo-work/sft --output demo-work/examples/merged
    """
    from knowlm.weights import merge_lora

    _outputs(output, overwrite, "dir", ("--base", base), ("--adapter", adapter))
    s = merge_lora(base, adapter, output, allow_noop=allow_noop, max_shard_size=max_shard_size, progress=True)
    console.print(f"Merged the adapter into {s.merged} tensors ({s.replaced} replaced from modules_to_save, {s.copied} copied) "
                  f"and wrote {s.output} in {s.seconds:.1f}s; the largest change was {s.largest_change:.3g} in {s.largest_change_tensor}.")


@weights_app.command("convert-meta")
def convert_meta_cmd(
    input: Path = typer.Option(..., "--input", "-i", help="Meta checkpoint directory (consolidated.*.pth + params.json)."),
    output: Path = typer.Option(..., "--output", "-o", help="Hugging Face model directory to write."),
    tokenizer: Optional[Path] = typer.Option(None, help="tokenizer.model (default: in the input directory or its parent)."),
    dtype: Optional[str] = typer.Option(None, help="float32, float16 or bfloat16 (default: as stored)."),
    max_position_embeddings: Optional[int] = typer.Option(None, help="Context length for config.json (default: params.json's max_seq_len, else 2048)."),
    max_shard_size: str = typer.Option("5GB", help="Largest safetensors shard."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Convert Meta's original LLaMA checkpoint to Hugging Face layout, one tensor at a time.

    Example (Meta's original download, not made by the demo): knowlm weights convert-meta --input llama/13B --output llama-13b-hf
    """
    from knowlm.weights import convert_meta

    _outputs(output, overwrite, "dir", ("--input", input), ("--tokenizer", tokenizer))
    s = convert_meta(input, output, tokenizer=tokenizer, dtype=dtype, max_position_embeddings=max_position_embeddings,
                     max_shard_size=max_shard_size, progress=True)
    console.print(f"Converted {s.shards} Meta shard(s) ({s.layers} layers, hidden {s.hidden_size}, ffn {s.intermediate_size}, "
                  f"vocab {s.vocab_size}, {s.dtype}) into {s.tensors} Hugging Face tensors in {s.output} in {s.seconds:.1f}s.")


@weights_app.command("export-gguf")
def export_gguf_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="Hugging Face LLaMA/Mistral/Qwen2 directory, or a PEFT LoRA adapter directory."),
    output: Path = typer.Option(..., "--output", "-o", help="GGUF file to write."),
    type: str = typer.Option("f16", "--type", help="f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1; with llama-cpp-python also "
                             "K-quants and IQ types (q4_k_m, q5_k_m, q6_k, iq4_xs, ...). Adapters: f32, f16, bf16, q8_0."),
    base: Optional[Path] = typer.Option(None, "--base", "-b", help="For an adapter: its base model directory (default: "
                                        "base_model_name_or_path of adapter_config.json)."),
    imatrix: Optional[Path] = typer.Option(None, "--imatrix", help="Importance matrix from llama-imatrix (K-quant/IQ types)."),
    name: Optional[str] = typer.Option(None, "--name", help="general.name in the file (default: from the model card or directory)."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Export a model to GGUF for llama.cpp (tokenizer, chat template and rope scaling included), or a LoRA adapter
    to a GGUF adapter for llama.cpp's --lora.

    Example: knowlm weights export-gguf --model demo-work/merged --output demo-work/examples/merged-f16.gguf --type f16

    A LoRA adapter: knowlm weights export-gguf --model demo-work/sft --base demo-work/pretrain --output demo-work/examples/sft-lora.gguf
    """
    _outputs(output, overwrite, "file", ("--model", model), ("--base", base), ("--imatrix", imatrix))
    if (model / "adapter_config.json").is_file():
        from knowlm.weights.gguf_lora import export_lora_gguf

        a = export_lora_gguf(model, output, base=base, type=type, name=name)
        console.print(f"Wrote the LoRA adapter ({a.pairs} A/B pairs, alpha {a.alpha:g}) as {a.type} to {a.output} "
                      f"({_gib(a.bytes)}) in {a.seconds:.1f}s; use it with llama.cpp: llama-cli -m BASE.gguf --lora {a.output}")
        return
    from knowlm.weights import export_gguf

    s = export_gguf(model, output, type=type, name=name, progress=True, imatrix=imatrix)
    extra = f" ({s.quantized} matrices {s.type}, {s.fallback_f16} kept f16)" if s.quantized or s.fallback_f16 else ""
    if s.mix:  # llama.cpp's quantizer mixes types per tensor
        extra = " (matrices: " + ", ".join(f"{n} {kind}" for kind, n in sorted(s.mix.items())) + ")"
    console.print(f"Wrote {s.tensors} tensors{extra} as {s.type} to {s.output} ({_gib(s.bytes)}) in {s.seconds:.1f}s "
                  f"with the vocabulary from {s.tokenizer}; run it with llama.cpp: llama-cli -m {s.output}")


@weights_app.command("export-mindspore")
def export_mindspore_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="Hugging Face LLaMA directory."),
    output: Path = typer.Option(..., "--output", "-o", help="MindSpore .ckpt file to write."),
    dtype: Optional[str] = typer.Option(None, help="float32, float16 or bfloat16 (default: as stored)."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Export a LLaMA model to a MindSpore checkpoint with MindFormers' parameter names (Ascend).

    Example: knowlm weights export-mindspore --model demo-work/merged --output demo-work/examples/merged.ckpt
    """
    from knowlm.weights import export_mindspore

    _outputs(output, overwrite, "file", ("--model", model))
    s = export_mindspore(model, output, dtype=dtype, progress=True)
    console.print(f"Wrote {s.tensors} tensors to {s.output} ({_gib(s.bytes)}) in {s.seconds:.1f}s with MindFormers names "
                  f"(e.g. model.tok_embeddings.embedding_weight); load it with mindspore.load_checkpoint.")


@weights_app.command("download")
def download_cmd(
    repo_id: str = typer.Argument(..., help="Hub repository id, e.g. zjunlp/OneKE."),
    output: Path = typer.Option(..., "--output", "-o", help="Local directory (re-running resumes)."),
    include: Optional[List[str]] = typer.Option(None, "--include", help="Glob of files to fetch (repeatable), e.g. '*.safetensors'."),
    revision: Optional[str] = typer.Option(None, help="Branch, tag or commit."),
    checksums: Optional[Path] = typer.Option(None, help="md5sum/sha256sum list to verify the files against."),
    offline: bool = typer.Option(False, "--offline", help="Use only local files (also HF_HUB_OFFLINE=1)."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Download a model snapshot from the Hugging Face hub and verify checksums.

    Example (needs the network): knowlm weights download zjunlp/OneKE --output OneKE --include '*.safetensors' --checksums md5.txt
    """
    from knowlm.utils.outputs import check_output
    from knowlm.weights import download

    # Re-running into the same directory resumes (the hub client keeps OUTPUT/.cache/huggingface); any
    # other non-empty directory is refused unless --overwrite.
    resuming = (output / ".cache" / "huggingface").is_dir()
    check_output(output, overwrite=overwrite or resuming, kind="dir", inputs=[checksums])
    s = download(repo_id, output, include=include, revision=revision, checksums=checksums, offline=offline)
    checked = f"{s['verified']} files matched their {s['checksum_algorithm']} checksums" if checksums else "no checksum list given"
    console.print(f"Downloaded {s['files']} files ({_gib(s['bytes'])}) of {repo_id} into {s['output']} in {s['seconds']:.1f}s; {checked}.")


@weights_app.command("verify")
def verify_cmd(
    directory: Path = typer.Argument(..., help="Directory holding the files."),
    checksums: Path = typer.Option(..., "--checksums", "-c", help="md5sum/sha256sum list (HEX  filename per line)."),
) -> None:
    """Verify files against an MD5/SHA-256 list, naming the first file that does not match.

    Example: (cd demo-work/merged && sha256sum *.safetensors) > demo-work/merged.sha256 && knowlm weights verify demo-work/merged --checksums demo-work/merged.sha256
    """
    from knowlm.weights import verify_checksums

    r = verify_checksums(directory, checksums)
    console.print(f"All {len(r.verified)} listed files in {directory} match their {r.algorithm} checksums ({r.seconds:.1f}s).")


def register(app: typer.Typer) -> None:
    app.add_typer(weights_app, name="weights")
