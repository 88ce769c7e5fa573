"""Model and tokenizer for training: full weights, LoRA (PEFT: DoRA, rsLoRA) or QLoRA (4-bit NF4, CUDA only).

Weights are loaded in the dtype the precision needs, not always fp32:

- ``fp32``: everything fp32.
- ``bf16``/``fp16`` (mixed): full fine-tuning keeps fp32 master weights under autocast; LoRA
  keeps the frozen base in the compute dtype and only the adapters in fp32 (a 13B base then
  takes 26 GB, not 52).
- ``bf16-pure``: every weight, adapter and optimizer state in bf16 (no fp32 copy at all).

Under FSDP the base stays fp32 (sharded): FSDP2 all-gathers one dtype per layer group.
"""

from __future__ import annotations

import torch

from knowlm.errors import KnowlmError
from knowlm.models.loading import load_tokenizer, resolve_model_path

HALF = {"bf16": torch.bfloat16, "fp16": torch.float16, "bf16-pure": torch.bfloat16}


def check_method_available(method: str) -> None:
    """QLoRA needs CUDA and bitsandbytes: say so before anything is loaded."""
    if method != "qlora":
        return
    if not torch.cuda.is_available():
        raise KnowlmError("--qlora loads the base model in 4-bit NF4 with bitsandbytes, which needs a CUDA GPU; "
                          "this machine has none (use --lora or --full)")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise KnowlmError("--qlora needs bitsandbytes: pip install 'knowlm[gpu]'") from None


def load_dtype(method: str, precision: str, strategy: str) -> torch.dtype:
    """The dtype the base weights are loaded in (see the module docstring)."""
    if precision == "bf16-pure":
        return torch.bfloat16
    if method in ("lora", "qlora") and precision in ("bf16", "fp16") and strategy != "fsdp":
        return HALF[precision]
    return torch.float32


def load_for_training(cfg, device, precision: str, strategy: str, deepspeed_config: dict | None = None):
    """-> (model, tokenizer), ready to wrap: adapters added, loss head installed, ``use_cache`` off."""
    from transformers import AutoModelForCausalLM

    from knowlm.models.attention import load_kwargs
    from knowlm.train.loss import install_loss_head

    check_method_available(cfg.method)
    path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(path, padding_side="right")
    dtype = load_dtype(cfg.method, precision, strategy)
    kwargs: dict = {"dtype": dtype, **load_kwargs(cfg.attn_implementation, device.type, precision != "fp32", cfg.hub_kernels)}
    hf_ds = None
    if cfg.method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16,
        )
        kwargs["device_map"] = {"": device.index or 0}
    elif deepspeed_config and deepspeed_config.get("zero_optimization", {}).get("stage") == 3 and cfg.method == "full":
        # ZeRO-3 partitions weights while loading, so a 13B model never sits whole in one process.
        from transformers.integrations import HfDeepSpeedConfig

        hf_ds = HfDeepSpeedConfig(deepspeed_config)  # noqa: F841 - must stay alive during from_pretrained
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        raise KnowlmError(f"cannot load model from {cfg.model}: {str(exc).splitlines()[0]}") from None
    del hf_ds
    model._knowlm_use_cache = getattr(model.config, "use_cache", True)
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        checkpoint_layers(model, cfg.checkpoint_every)
    if cfg.method in ("lora", "qlora"):
        model = add_lora(model, cfg, keep_adapter_dtype=precision == "bf16-pure")
    elif cfg.method == "full":
        model.requires_grad_(True)
    if getattr(cfg, "neftune_noise_alpha", 0):
        add_neftune(model, cfg.neftune_noise_alpha)
    install_loss_head(model, cfg.loss_chunk_size)
    if cfg.compile:
        compile_layers(model)
    return model, tokenizer


def compile_layers(model) -> int:
    """``torch.compile`` each decoder layer in place (as torchtune does): parameter names and state
    dicts stay as they are, and the loss head and engines' hooks stay outside the compiled graphs."""
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile()
    return len(layers)


def decoder_layers(model) -> list:
    return [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]


def checkpoint_layers(model, every: int = 1) -> int:
    """Activation checkpointing on every ``every``-th decoder layer (the policy: all layers recompute
    the most and keep the least; every other layer halves the recompute for more memory).
    Returns how many layers recompute."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.25: the policy is built in
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs, every_n_layers=every)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    layers = [m for m in decoder_layers(model) if hasattr(m, "gradient_checkpointing")]
    for i, layer in enumerate(layers):
        layer.gradient_checkpointing = i % every == 0
    return sum(layer.gradient_checkpointing for layer in layers)


def add_lora(model, cfg, keep_adapter_dtype: bool = False):
    """Wrap with a PEFT LoRA adapter; by default on every linear projection (not the LM head).

    Adapters are created in fp32 beside a half-precision base (PEFT's ``autocast_adapter_dtype``)
    unless ``keep_adapter_dtype`` (pure bf16).
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    targets = cfg.lora_target_modules or "all-linear"
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM",
                      use_dora=cfg.use_dora, use_rslora=cfg.use_rslora)
    try:
        model = get_peft_model(model, lora, autocast_adapter_dtype=not keep_adapter_dtype)
    except ValueError as exc:
        raise KnowlmError(f"cannot add LoRA to {cfg.model}: {str(exc).splitlines()[0]}") from None
    if cfg.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def add_neftune(model, alpha: float) -> None:
    """NEFTune (Jain et al. 2023): uniform noise of scale ``alpha / sqrt(seq_len * hidden)`` on the
    input embeddings while training, exactly as transformers' Trainer adds it."""
    embeddings = model.get_input_embeddings()

    def hook(module, args, output):
        if module.training:
            scale = alpha / torch.sqrt(torch.tensor(output.size(1) * output.size(2), dtype=torch.float32))
            output = output + torch.zeros_like(output).uniform_(-float(scale), float(scale))
        return output

    embeddings.register_forward_hook(hook)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts, exact under ZeRO-3 partitioning (``ds_numel``)."""
    trainable = total = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", None) or p.numel()
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total
