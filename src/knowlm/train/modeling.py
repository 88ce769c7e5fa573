"""Model and tokenizer for training: full weights, LoRA (PEFT) or QLoRA (4-bit NF4, CUDA only)."""

from __future__ import annotations

from knowlm.errors import KnowlmError
from knowlm.models.loading import load_tokenizer, resolve_model_path


def check_method_available(method: str) -> None:
    """QLoRA needs CUDA and bitsandbytes: say so before anything is loaded."""
    if method != "qlora":
        return
    import torch

    if not torch.cuda.is_available():
        raise KnowlmError("--qlora loads the base model in 4-bit NF4 with bitsandbytes, which needs a CUDA GPU; "
                          "this machine has none (use --lora or --full)")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise KnowlmError("--qlora needs bitsandbytes: pip install 'knowlm[gpu]'") from None


def load_for_training(cfg, device, param_dtype, deepspeed_config: dict | None = None):
    """-> (model, tokenizer). Weights stay in ``param_dtype`` (fp32 master weights with autocast)."""
    import torch
    from transformers import AutoModelForCausalLM

    check_method_available(cfg.method)
    path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(path, padding_side="right")
    kwargs: dict = {"dtype": param_dtype}
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
    except (OSError, ValueError) as exc:
        raise KnowlmError(f"cannot load model from {cfg.model}: {str(exc).splitlines()[0]}") from None
    del hf_ds
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.method in ("lora", "qlora"):
        model = add_lora(model, cfg)
    elif cfg.method == "full":
        model.requires_grad_(True)
    return model, tokenizer


def add_lora(model, cfg):
    """Wrap with a PEFT LoRA adapter; by default on every linear projection (not the LM head)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    targets = cfg.lora_target_modules or "all-linear"
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:
        raise KnowlmError(f"cannot add LoRA to {cfg.model}: {str(exc).splitlines()[0]}") from None
    if cfg.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts, exact under ZeRO-3 partitioning (``ds_numel``)."""
    trainable = total = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", None) or p.numel()
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total
