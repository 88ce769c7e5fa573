"""Optional experiment trackers beside ``metrics.jsonl``: TensorBoard, Weights & Biases, MLflow.

Each is imported only when asked for (``--report-to wandb,mlflow``); a missing package is a
one-line error before training starts, not a traceback after an hour. Only rank 0 reports.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from knowlm.errors import KnowlmError

INSTALL = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def requested(cfg) -> list[str]:
    names = [n.strip() for n in (getattr(cfg, "report_to", None) or "").split(",") if n.strip()]
    if getattr(cfg, "tensorboard", False) and "tensorboard" not in names:
        names.insert(0, "tensorboard")
    return names


class TensorBoardReporter:
    def __init__(self, cfg, kind: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise KnowlmError("--report-to tensorboard needs the tensorboard package: pip install tensorboard") from None
        self.writer = SummaryWriter(str(Path(cfg.output) / "tensorboard"))

    def log(self, record: dict) -> None:
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.writer.close()


class WandbReporter:
    def __init__(self, cfg, kind: str):
        try:
            import wandb
        except ImportError:
            raise KnowlmError("--report-to wandb needs the wandb package: pip install wandb") from None
        self.wandb = wandb
        self.run = wandb.init(name=cfg.run_name or Path(cfg.output).name, config=dataclasses.asdict(cfg),
                              job_type=kind, dir=str(cfg.output), resume="allow")

    def log(self, record: dict) -> None:
        values = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
        self.run.log(values, step=int(record["step"]))

    def close(self) -> None:
        self.run.finish()


class MlflowReporter:
    def __init__(self, cfg, kind: str):
        try:
            import mlflow
        except ImportError:
            raise KnowlmError("--report-to mlflow needs the mlflow package: pip install mlflow") from None
        self.mlflow = mlflow
        mlflow.start_run(run_name=cfg.run_name or Path(cfg.output).name, tags={"knowlm.recipe": kind})
        params = {k: str(v)[:250] for k, v in dataclasses.asdict(cfg).items()}
        mlflow.log_params(params)

    def log(self, record: dict) -> None:
        values = {k: float(v) for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
        self.mlflow.log_metrics(values, step=int(record["step"]))

    def close(self) -> None:
        self.mlflow.end_run()


REPORTERS = {"tensorboard": TensorBoardReporter, "wandb": WandbReporter, "mlflow": MlflowReporter}


def check_available(cfg) -> None:
    """Fail before the model loads when a requested tracker is not installed."""
    import importlib.util

    modules = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
    for name in requested(cfg):
        if importlib.util.find_spec(modules[name]) is None:
            raise KnowlmError(f"--report-to {name} needs the {INSTALL[name]} package: pip install {INSTALL[name]}")


def open_reporters(cfg, kind: str) -> list:
    """The trackers ``cfg`` asks for, started (a one-line error when a package is missing)."""
    return [REPORTERS[name](cfg, kind) for name in requested(cfg)]
