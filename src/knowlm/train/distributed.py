"""One training step, four engines: a single process, DDP, FSDP2 and DeepSpeed ZeRO.

The training loop talks to a :class:`Runtime`; only this module knows how each engine
wraps the model, accumulates and clips gradients, saves and restores sharded state, and
gathers the full weights at the end. Everything runs on CPU with gloo (tests) and on GPUs with
NCCL, under ``torchrun`` on one or several nodes.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from knowlm.errors import KnowlmError
from knowlm.train.config import CONFIG_DIR
from knowlm.train.loss import LossHead
from knowlm.utils.net import free_port

DEEPSPEED_PRESETS = {"zero2": "ds_zero2.json", "zero3": "ds_zero3.json", "zero3_offload": "ds_zero3_offload.json"}


@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_strategy(strategy: str) -> str:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if strategy == "auto":
        return "ddp" if world > 1 else "single"
    if strategy == "single" and world > 1:
        raise KnowlmError("--strategy single cannot run under torchrun with several processes; use ddp, fsdp or deepspeed")
    return strategy


def init_distributed(strategy: str) -> DistEnv:
    """Join the process group torchrun set up (or make a one-process group for fsdp/deepspeed)."""
    import torch.distributed as dist

    env = DistEnv(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                  int(os.environ.get("LOCAL_RANK", 0)))
    cuda = torch.cuda.is_available()
    env.device = torch.device("cuda", env.local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(env.device)
    if strategy == "single" or dist.is_initialized():
        return env
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    backend = "nccl" if cuda else "gloo"
    if strategy == "deepspeed":
        import deepspeed

        from knowlm.utils.noise import announce_deepspeed_builds

        announce_deepspeed_builds()  # a first-use op build takes minutes: say so instead of stalling silently
        deepspeed.init_distributed(dist_backend=backend)
    else:
        dist.init_process_group(backend=backend, device_id=env.device if cuda else None)
    return env


def load_deepspeed_config(name_or_path: str | None, cfg, world: int, precision: str) -> dict:
    """Read a DeepSpeed JSON (a path or a shipped preset) and fill its "auto" values from our flags."""
    name = name_or_path or "zero3"
    path = Path(name).expanduser()
    if not path.is_file():
        if name not in DEEPSPEED_PRESETS:
            raise KnowlmError(f"DeepSpeed config {name!r} not found; give a JSON file or one of: {', '.join(DEEPSPEED_PRESETS)}")
        path = CONFIG_DIR / DEEPSPEED_PRESETS[name]
    try:
        ds = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise KnowlmError(f"{path}: invalid JSON ({exc.msg})") from None
    fill = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "train_batch_size": cfg.micro_batch_size * cfg.gradient_accumulation_steps * world,
        "gradient_clipping": cfg.max_grad_norm,
    }
    for key, value in fill.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
    for key in ("bf16", "fp16"):
        section = ds.setdefault(key, {})
        if section.get("enabled", "auto") == "auto":
            section["enabled"] = precision == key
    zero = ds.setdefault("zero_optimization", {})
    for key, value in list(zero.items()):
        if value == "auto":  # bucket sizes: DeepSpeed's own defaults
            del zero[key]
    ds.pop("optimizer", None) if ds.get("optimizer") == "auto" else None
    ds.setdefault("zero_allow_untested_optimizer", True)
    ds.setdefault("steps_per_print", 10**9)
    ds["_source"] = str(path)
    return ds


class Runtime:
    """The wrapped model and optimizer of one process, with engine-specific operations."""

    def __init__(self, strategy: str, env: DistEnv, model, optimizer, precision: str, max_grad_norm: float,
                 engine=None, architectures=None):
        self.strategy = strategy
        self.env = env
        self.model = model  # what forward() calls (DDP / FSDP module / DeepSpeed engine)
        self.module = engine.module if engine is not None else getattr(model, "module", model)
        self.optimizer = optimizer
        self.engine = engine
        self.precision = precision
        self.max_grad_norm = max_grad_norm
        self.architectures = architectures
        self.loss_head = LossHead(self.module)
        self.scaler = None
        if precision == "fp16" and strategy in ("single", "ddp"):
            self.scaler = torch.amp.GradScaler(env.device.type)

    # ---- distributed helpers -------------------------------------------------------------
    @property
    def distributed(self) -> bool:
        import torch.distributed as dist

        return dist.is_initialized()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        if not self.distributed:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.env.device)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def gather_objects(self, obj) -> list:
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out

    # ---- one step --------------------------------------------------------------------------
    def autocast(self):
        # bf16-pure computes in the weights' own dtype; FSDP and DeepSpeed cast themselves
        if self.strategy in ("deepspeed", "fsdp") or self.precision not in ("bf16", "fp16"):
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.env.device.type, dtype=dtype)

    def no_sync(self, last: bool):
        """Skip the gradient all-reduce on all but the last micro-batch of a step (DDP)."""
        if self.strategy == "ddp" and not last:
            return self.model.no_sync()
        return contextlib.nullcontext()

    def forward(self, batch: dict):
        """The model's output ``logits`` (per-label-token NLL while :meth:`token_nll` runs it)."""
        kwargs = {k: v.to(self.env.device, non_blocking=True) for k, v in batch.items()
                  if k in ("input_ids", "attention_mask", "position_ids")}
        with self.autocast():
            return self.model(**kwargs).logits

    def token_nll(self, batch: dict) -> torch.Tensor:
        """fp32 next-token NLL of every label token of ``batch`` (row-major), chunked where the head allows."""
        labels = batch["labels"].to(self.env.device)
        return self.loss_head.nll(lambda: self.forward(batch), labels)

    def backward(self, loss, last: bool) -> None:
        if self.strategy == "fsdp":
            self.model.set_requires_gradient_sync(last)
        if self.engine is not None:
            self.engine.backward(loss, scale_wrt_gas=False)
        elif self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def step(self) -> float | None:
        """Clip, update, zero the gradients; returns the gradient norm before clipping."""
        if self.engine is not None:
            self.engine.step()
            norm = self.engine.get_global_grad_norm()
            return float(norm) if norm is not None else None
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm if self.max_grad_norm > 0 else float("inf"))
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)

    # ---- what is actually in use (tests assert it) ------------------------------------------
    def sharding_report(self) -> dict:
        local = total = 0
        for p in self.module.parameters():
            if self.strategy == "deepspeed" and hasattr(p, "ds_tensor"):
                local += p.ds_tensor.numel()
                total += p.ds_numel
            elif hasattr(p, "to_local"):
                local += p.to_local().numel()
                total += p.numel()
            else:
                local += p.numel()
                total += p.numel()
        report = {"rank": self.env.rank, "wrapper": type(self.model).__name__, "local_numel": local, "total_numel": total}
        if self.strategy == "fsdp":
            from torch.distributed.fsdp import FSDPModule

            report["fsdp_modules"] = sum(isinstance(m, FSDPModule) for m in self.module.modules())
        if self.engine is not None:
            report["zero_stage"] = self.engine.zero_optimization_stage()
            report["optimizer"] = type(self.engine.optimizer).__name__
        return report

    # ---- checkpoints ---------------------------------------------------------------------------
    def _trainable_state(self) -> dict:
        names = {n for n, p in self.module.named_parameters() if p.requires_grad}
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items() if k in names}

    def save_state(self, directory: Path) -> None:
        """Model + optimizer state into ``directory`` (all ranks call; collective for fsdp/deepspeed)."""
        if self.engine is not None:
            self.engine.save_checkpoint(str(directory), tag="engine", save_latest=False,
                                        exclude_frozen_parameters=True)
        elif self.strategy == "fsdp":
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict

            model_state, optim_state = get_state_dict(self.model, self.optimizer)
            dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(directory / "dcp"))
        elif self.env.is_main:
            torch.save(self._trainable_state(), directory / "model.pt")
            torch.save(self.optimizer.state_dict(), directory / "optimizer.pt")
            if self.scaler is not None:
                torch.save(self.scaler.state_dict(), directory / "scaler.pt")

    def load_state(self, directory: Path) -> None:
        if self.engine is not None:
            path, _ = self.engine.load_checkpoint(str(directory), tag="engine", load_module_strict=False)
            if path is None:
                raise KnowlmError(f"cannot load DeepSpeed checkpoint from {directory}")
        elif self.strategy == "fsdp":
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

            model_state, optim_state = get_state_dict(self.model, self.optimizer)
            state = {"model": model_state, "optimizer": optim_state}
            dcp.load(state, checkpoint_id=str(directory / "dcp"))
            set_state_dict(self.model, self.optimizer, model_state_dict=state["model"],
                           optim_state_dict=state["optimizer"])
        else:
            if not (directory / "model.pt").is_file():
                raise KnowlmError(f"checkpoint {directory} has no model.pt (saved by another --strategy?)")
            weights = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
            missing, unexpected = self.module.load_state_dict(weights, strict=False)
            if unexpected:
                raise KnowlmError(f"checkpoint {directory} does not match the model: unexpected {unexpected[:3]}")
            self.optimizer.load_state_dict(torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=True))
            if self.scaler is not None and (directory / "scaler.pt").is_file():
                self.scaler.load_state_dict(torch.load(directory / "scaler.pt", weights_only=True))

    def full_state_dict(self) -> dict | None:
        """The complete weights on rank 0 (None elsewhere); collective for fsdp and ZeRO-3."""
        if self.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            return state if self.env.is_main else None
        if self.engine is not None and self.engine.zero_optimization_stage() == 3:
            state = self.engine._zero3_consolidated_16bit_state_dict()
            return state if self.env.is_main else None
        return self.module.state_dict() if self.env.is_main else None


def wrap(strategy: str, env: DistEnv, model, cfg, precision: str, ds_config: dict | None) -> Runtime:
    """Wrap the model for the chosen engine and build its optimizer."""
    from knowlm.train.modeling import decoder_layers
    from knowlm.train.optim import build_optimizer, param_groups

    architectures = getattr(model.config, "architectures", None) if hasattr(model, "config") else None
    ratio = getattr(cfg, "loraplus_lr_ratio", 0.0)

    def optimizer_for(module, fused: bool):
        return build_optimizer(param_groups(module, ratio), cfg, env.device, fused)

    if strategy == "deepspeed":
        import deepspeed

        optimizer = None if "optimizer" in ds_config else optimizer_for(model, fused=False)
        config = {k: v for k, v in ds_config.items() if not k.startswith("_")}
        engine, ds_optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                          model_parameters=[p for p in model.parameters() if p.requires_grad],
                                                          config=config)
        return Runtime(strategy, env, engine, ds_optimizer, precision, cfg.max_grad_norm, engine, architectures)

    if precision == "fp16" and strategy == "fsdp":
        raise KnowlmError("fp16 with FSDP needs a sharded gradient scaler; use --precision bf16 or --deepspeed")
    if strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mixed = precision == "bf16"
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed else MixedPrecisionPolicy()
        model.to(env.device)
        for layer in decoder_layers(model):
            fully_shard(layer, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        return Runtime(strategy, env, model, optimizer_for(model, fused=False), precision, cfg.max_grad_norm, None, architectures)

    if getattr(model, "hf_device_map", None) is None:  # a 4-bit model is already placed
        model.to(env.device)
    optimizer = optimizer_for(model, fused=True)
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model, device_ids=[env.local_rank] if env.device.type == "cuda" else None)
        return Runtime(strategy, env, wrapped, optimizer, precision, cfg.max_grad_norm, None, architectures)
    return Runtime(strategy, env, model, optimizer, precision, cfg.max_grad_norm, None, architectures)
